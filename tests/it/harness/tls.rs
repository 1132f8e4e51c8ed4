//! Test PKI and password files made with the `openssl` and `htpasswd` command-line tools
//! (Debian packages `openssl` and `apache2-utils`): a CA, a server certificate for given
//! names, a client certificate for mutual TLS, an unrelated CA, and an ES256 token-signing
//! key with its self-signed certificate.

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Certificates and keys in a temporary directory (PEM unless said otherwise).
pub struct Pki {
    /// Holds the files (removed when the Pki is dropped).
    _dir: tempfile::TempDir,
    /// The CA that issued the server and client certificates.
    pub ca_cert: PathBuf,
    /// Server certificate: DNS names given to `generate`, `localhost`, and IP 127.0.0.1.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate (extendedKeyUsage clientAuth), issued by `ca_cert`.
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// A CA that issued nothing here: trusting it must not make the server trusted.
    pub other_ca_cert: PathBuf,
    /// Self-signed certificate of the token-signing key (a registry's `rootcertbundle`).
    pub token_cert: PathBuf,
    /// The token-signing key, PKCS#8 DER (for `ring`).
    pub token_key_pkcs8: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// Generates everything; `server_names` become DNS subjectAltNames of the server certificate.
    pub fn generate(server_names: &[&str]) -> Pki {
        let dir = tempfile::Builder::new().prefix("oras-test-pki").tempdir().unwrap();
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        for (name, cn) in [("ca", "oras test CA"), ("other-ca", "oras unrelated CA")] {
            let mut args = vec!["req", "-x509"];
            args.extend(ec);
            let key = format!("{name}.key");
            let crt = format!("{name}.crt");
            let subj = format!("/CN={cn}");
            args.extend([
                "-keyout",
                &key,
                "-out",
                &crt,
                "-days",
                "3",
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(d, &args);
        }
        let mut sans: Vec<String> = server_names.iter().map(|n| format!("DNS:{n}")).collect();
        sans.push("DNS:localhost".into());
        sans.push("IP:127.0.0.1".into());
        std::fs::write(
            d.join("server.ext"),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for (name, cn) in [
            ("server", server_names.first().copied().unwrap_or("localhost")),
            ("client", "oras test client"),
        ] {
            let mut args = vec!["req", "-new"];
            args.extend(ec);
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let subj = format!("/CN={cn}");
            args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(d, &args);
            let crt = format!("{name}.crt");
            let ext = format!("{name}.ext");
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &crt,
                    "-days",
                    "3",
                    "-extfile",
                    &ext,
                ],
            );
        }
        // The token-signing key: ES256 (P-256), with a self-signed certificate for x5c.
        openssl(
            d,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                "token.key",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "token.key",
                "-out",
                "token.crt",
                "-days",
                "3",
                "-subj",
                "/CN=oras test token issuer",
            ],
        );
        openssl(
            d,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "token.key",
                "-outform",
                "DER",
                "-out",
                "token.pk8",
            ],
        );
        Pki {
            ca_cert: d.join("ca.crt"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.crt"),
            client_key: d.join("client.key"),
            other_ca_cert: d.join("other-ca.crt"),
            token_cert: d.join("token.crt"),
            token_key_pkcs8: d.join("token.pk8"),
            _dir: dir,
        }
    }

    /// The token certificate as an `x5c` entry: standard base64 of its DER.
    pub fn token_cert_x5c(&self) -> String {
        let pem = std::fs::read_to_string(&self.token_cert).unwrap();
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        // Round-trip to be sure it is valid base64 of DER.
        let der = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .expect("certificate PEM body is base64");
        base64::engine::general_purpose::STANDARD.encode(der)
    }
}

/// Writes an htpasswd file (bcrypt, as Distribution requires) with `htpasswd -Bbn`.
pub fn write_htpasswd(path: &Path, users: &[(&str, &str)]) {
    let mut all = String::new();
    for (user, password) in users {
        let out = Command::new("htpasswd")
            .args(["-Bbn", "-C", "5", user, password])
            .output()
            .expect("run htpasswd (Debian package apache2-utils)");
        assert!(out.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
        all.push_str(String::from_utf8_lossy(&out.stdout).trim());
        all.push('\n');
    }
    std::fs::write(path, all).unwrap();
}

/// The `auth:` body for Distribution's htpasswd authentication.
pub fn htpasswd_auth_yaml(path: &Path) -> String {
    format!("  htpasswd:\n    realm: oras-test\n    path: {}\n", path.display())
}
