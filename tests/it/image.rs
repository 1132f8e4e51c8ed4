//! The container image: `scripts/image.sh` builds it from the Dockerfile with buildah (offline, no
//! daemon), and the image's configuration, its files and a run of `oras` inside it are checked.
//!
//! A Rust test rather than a shell one, so that it is counted by `cargo test` like every other:
//! it needs root (buildah's storage and its chroot isolation) and buildah, which the script
//! installs when missing, so it is marked ignored with that reason; scripts/test.sh runs ignored
//! tests when it runs as root, as CI does, and elsewhere the summary counts it as ignored.
//!
//! The image is built from the binary this test run built (a debug build, dynamically linked
//! against glibc) unless `ORAS_IMAGE_TEST_BINARY` names another (a static musl build, as a release
//! ships): the image's base is empty, so to run a dynamic binary the test mounts the host's library
//! directories into the container, read-only, for that run alone; a static binary runs without.

use crate::harness::Oras;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// buildah with its own storage below `root`, the vfs driver as the script uses.
fn buildah(root: &Path) -> Command {
    let mut c = Command::new("buildah");
    c.arg("--storage-driver")
        .arg("vfs")
        .arg("--root")
        .arg(root)
        .arg("--runroot")
        .arg(root.join("run"));
    c
}

/// Runs `cmd`; its stdout, after checking that it succeeded.
fn run(mut cmd: Command) -> String {
    let out: Output = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 stdout")
}

/// Whether an ELF executable names a program interpreter (the dynamic loader), i.e. is not static.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |o: usize| elf.get(o..o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at =
        |o: usize| elf.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    // 64-bit little-endian ELF only: the targets this is built for here.
    assert!(elf.starts_with(b"\x7fELF\x02\x01"), "not a 64-bit little-endian ELF executable");
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        panic!("truncated ELF header");
    };
    (0..phnum).any(|i| u32_at(phoff as usize + i * phentsize) == Some(PT_INTERP))
}

#[test]
#[ignore = "needs root and buildah: scripts/test.sh runs it (as root), installing buildah if missing"]
fn the_image_runs_oras_as_user_65532_with_its_labels_certificates_and_entrypoint() {
    // SAFETY: getuid cannot fail and touches no memory.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test needs root: buildah's storage and chroot isolation"
    );
    let binary = std::env::var_os("ORAS_IMAGE_TEST_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_oras").into());
    let bytes =
        std::fs::read(&binary).unwrap_or_else(|e| panic!("cannot read {}: {e}", binary.display()));
    let tmp = tempfile::tempdir().expect("temp dir");
    let storage = tmp.path().join("storage");
    let tag = format!("localhost/oras-image-test:{}", std::process::id());

    let mut build = Command::new("bash");
    build
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/image.sh"))
        .arg(&binary)
        .arg(&tag)
        .env("BUILDAH_ROOT", &storage)
        .env("IMAGE_REVISION", "0123456789abcdef0123456789abcdef01234567")
        .env("IMAGE_SOURCE", "https://example.invalid/oras")
        .env_remove("IMAGE_VERSION")
        .env_remove("IMAGE_PLATFORM")
        .env("SOURCE_DATE_EPOCH", "1796342400");
    let id = run(build);
    assert!(
        id.trim().starts_with("sha256:") && id.trim().len() == 71,
        "image ID on stdout: {id:?}"
    );

    // The configuration.
    let mut inspect = buildah(&storage);
    inspect.args(["inspect", "--type", "image", &tag]);
    let image: Value = serde_json::from_str(&run(inspect)).expect("buildah inspect JSON");
    let oci = &image["OCIv1"];
    let config = &oci["config"];
    assert_eq!(config["Entrypoint"], serde_json::json!(["oras"]), "{config}");
    assert_eq!(config["User"], "65532:65532", "{config}");
    let env: Vec<&str> =
        config["Env"].as_array().expect("Env").iter().filter_map(Value::as_str).collect();
    assert!(env.contains(&"PATH=/usr/local/bin"), "{env:?}");
    assert!(env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"), "{env:?}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "oras");
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION"),
        "the version defaults to Cargo.toml's"
    );
    assert_eq!(
        labels["org.opencontainers.image.revision"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(labels["org.opencontainers.image.source"], "https://example.invalid/oras");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert!(
        labels["org.opencontainers.image.description"].as_str().is_some_and(|d| d.contains("OCI")),
        "{labels}"
    );
    assert_eq!(oci["created"], "2026-12-04T00:00:00Z", "SOURCE_DATE_EPOCH is the image's time");
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!((oci["os"].as_str(), oci["architecture"].as_str()), (Some("linux"), Some(arch)));
    assert_eq!(
        oci["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(1),
        "one layer: {}",
        oci["rootfs"]
    );

    // The files, in a container of the image before anything runs in it.
    let mut from = buildah(&storage);
    from.args(["from", &tag]);
    let container = run(from).trim().to_string();
    let mut mount = buildah(&storage);
    mount.args(["mount", &container]);
    let rootfs = PathBuf::from(run(mount).trim());
    let installed = rootfs.join("usr/local/bin/oras");
    assert!(
        std::fs::read(&installed).expect("/usr/local/bin/oras in the image") == bytes,
        "the binary is the one given"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&installed).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "executable by the non-root user, writable by nobody else");
    }
    let ca = std::fs::read(rootfs.join("etc/ssl/certs/ca-certificates.crt"))
        .expect("CA bundle in the image");
    assert!(
        ca.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----"),
        "the CA bundle holds certificates"
    );
    let passwd =
        std::fs::read_to_string(rootfs.join("etc/passwd")).expect("/etc/passwd in the image");
    assert!(passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:")), "{passwd}");
    let group = std::fs::read_to_string(rootfs.join("etc/group")).expect("/etc/group in the image");
    assert!(group.lines().any(|l| l.starts_with("nonroot:x:65532:")), "{group}");
    let mut umount = buildah(&storage);
    umount.args(["umount", &container]);
    run(umount);

    // A run: `oras` found on the image's PATH, as the image's user.
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let in_container = |args: &[&str]| {
        let mut c = buildah(&storage);
        c.args(["run", "--isolation", "chroot"]);
        c.arg("--volume").arg(format!("{}:/out", out.display()));
        if has_interpreter(&bytes) {
            for dir in ["/lib", "/lib64", "/usr/lib", "/usr/lib64"] {
                if let Ok(real) = std::fs::canonicalize(dir) {
                    c.arg("--volume").arg(format!("{}:{dir}:ro", real.display()));
                }
            }
        }
        c.arg(&container).arg("--").args(args);
        run(c)
    };
    let host =
        String::from_utf8(Oras::new(&["--version"]).binary(&binary).run().ok().stdout.clone())
            .expect("UTF-8 stdout");
    assert!(host.starts_with(&format!("oras {} (commit ", env!("CARGO_PKG_VERSION"))), "{host}");
    assert_eq!(
        in_container(&["oras", "--version"]),
        host,
        "the image's oras prints what the binary does"
    );
    in_container(&["oras", "man", "--dir", "/out"]);
    let page = out.join("oras.1");
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&page).expect("oras.1 written by the container");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (65532, 65532),
            "written as the image's user, not root"
        );
    }

    let mut rm = buildah(&storage);
    rm.args(["rm", &container]);
    run(rm);
    let mut rmi = buildah(&storage);
    rmi.args(["rmi", &tag]);
    run(rmi);
}
