//! `oras manifest fetch`: a manifest's exact bytes (or its descriptor), from a registry or a
//! backup.

use super::repo::{locate, Located};
use super::UsageError;
use crate::cli::ManifestFetchArgs;
use crate::manifest::Descriptor;
use anyhow::{Context, Result};
use std::io::Write;

/// Runs `oras manifest fetch`.
pub async fn fetch(args: ManifestFetchArgs) -> Result<()> {
    if args.descriptor && args.output.is_some() {
        return Err(UsageError("--descriptor prints the descriptor; --output writes the manifest's bytes: give one of them".into()).into());
    }
    let Located { src, repo, desc, .. } =
        locate(&args.reference, args.oci_layout, &args.common).await?;
    let bytes = src.fetch_manifest(&repo, &desc).await?;
    // What is printed is what the digest names, or nothing.
    crate::digest::verify_bytes(&bytes, &desc.digest, desc.size)
        .with_context(|| format!("manifest {} from {repo}", desc.digest))?;
    if args.descriptor {
        let d = Descriptor { annotations: None, ..desc };
        println!("{}", serde_json::to_string(&d)?);
        return Ok(());
    }
    match &args.output {
        Some(p) if p.as_os_str() != "-" => {
            crate::layout::dir::write_atomic(p, &bytes, false)
                .await
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}
