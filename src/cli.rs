//! The command tree and its flags (clap). No I/O here.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// The version line of `oras version` and `oras --version` (after the program name): the crate's
/// version, the commit and the date of the build, both recorded by `build.rs`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ORAS_GIT_COMMIT"),
    ", built ",
    env!("ORAS_BUILD_DATE"),
    ")"
);

/// Back up and restore OCI content (images, charts, signatures, SBOMs, any artifact) between
/// registries and OCI layouts.
#[derive(Parser, Debug)]
#[command(name = "oras", version = LONG_VERSION, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Back up repositories (tags, manifests, blobs and optionally referrers) into an OCI layout
    /// directory or tar.
    Backup(BackupArgs),
    /// Restore a backup (directory or tar) into one or more registries.
    Restore(RestoreArgs),
    /// List repositories or tags, of a registry or of a backup.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Show the referrers tree (signatures, SBOMs, attestations) of a manifest.
    Discover(DiscoverArgs),
    /// Manifests of a registry or of a backup.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Check a backup (directory or tar) for completeness and integrity.
    Verify(VerifyArgs),
    /// Copy one graph between registries and OCI layouts.
    #[command(alias = "cp")]
    Copy(CopyArgs),
    /// Check credentials against a registry and store them in the docker config.json (or the
    /// credential helper it names), for every later command.
    Login(LoginArgs),
    /// Remove a registry's stored credentials (from the docker config.json, or its credential
    /// helper).
    Logout(LogoutArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Print the version, the git commit and the build date.
    Version,
    /// Write man pages generated from the command tree.
    #[command(hide = true)]
    Man(ManArgs),
}

impl Command {
    /// Whether the run asked for the `--debug` trace; known before any command starts, so that
    /// what it reads first (a backup in object storage, say) is traced too.
    pub fn debug(&self) -> bool {
        match self {
            Command::Backup(a) => a.common.connection.debug,
            Command::Restore(a) => a.common.connection.debug,
            Command::Repo(RepoCommand::Ls(a)) => a.common.connection.debug,
            Command::Repo(RepoCommand::Tags(a)) => a.common.connection.debug,
            Command::Discover(a) => a.common.connection.debug,
            Command::Manifest(ManifestCommand::Fetch(a)) => a.common.connection.debug,
            Command::Copy(a) => a.common.connection.debug,
            Command::Login(a) => a.connection.debug,
            Command::Logout(_)
            | Command::Verify(_)
            | Command::Completion(_)
            | Command::Version
            | Command::Man(_) => false,
        }
    }
}

/// `oras repo`.
#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// List the repositories of a registry (catalog) or of a backup (--oci-layout).
    #[command(alias = "list")]
    Ls(RepoLsArgs),
    /// List the tags of a repository, or of a repository in a backup (--oci-layout
    /// <path>[:<repo>]).
    Tags(RepoTagsArgs),
}

/// `oras repo ls`.
#[derive(Args, Debug)]
pub struct RepoLsArgs {
    /// A registry, or with --oci-layout a backup directory or tar
    #[arg(value_name = "REGISTRY|PATH")]
    pub target: String,
    /// Read a backup (OCI layout directory or tar) instead of a registry
    #[arg(long)]
    pub oci_layout: bool,
    #[command(flatten)]
    pub common: Common,
}

/// `oras repo tags`.
#[derive(Args, Debug)]
pub struct RepoTagsArgs {
    /// <registry>/<repo>, or with --oci-layout <path>[:<repo>]
    #[arg(value_name = "REFERENCE|PATH")]
    pub target: String,
    /// Read a backup (OCI layout directory or tar) instead of a registry
    #[arg(long)]
    pub oci_layout: bool,
    /// Also list the referrers tag-schema tags (sha256-<hex>), which are not user tags and are
    /// hidden by default
    #[arg(long, conflicts_with = "exclude_digest_tags")]
    pub all: bool,
    /// Hide referrers tag-schema tags (sha256-<hex>): the default, accepted for scripts written for
    /// the ORAS CLI
    #[arg(long)]
    pub exclude_digest_tags: bool,
    #[command(flatten)]
    pub common: Common,
}

/// `oras manifest`.
#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Print a manifest's exact bytes (or its descriptor), from a registry or a backup
    /// (--oci-layout).
    #[command(alias = "get")]
    Fetch(ManifestFetchArgs),
}

/// `oras manifest fetch`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  oras manifest fetch registry.example/team/app:v1\n  oras manifest fetch --descriptor registry.example/team/app@sha256:...\n  oras manifest fetch --oci-layout backup.tar:registry.example/team/app:v1"
)]
pub struct ManifestFetchArgs {
    /// <registry>/<repo>:<tag> or @<digest>; with --oci-layout, <path>:<tag>, <path>@<digest> or
    /// <path>:<registry>/<repo>:<tag>
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
    /// Read a backup (OCI layout directory or tar) instead of a registry
    #[arg(long)]
    pub oci_layout: bool,
    /// Print the manifest's descriptor (media type, digest, size) instead of its bytes
    #[arg(long)]
    pub descriptor: bool,
    /// Write the bytes to this file instead of standard output
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

/// `oras discover`.
#[derive(Args, Debug)]
pub struct DiscoverArgs {
    /// <registry>/<repo>:<tag> or @<digest>; with --oci-layout, <path>:<tag> or <path>@<digest>
    #[arg(value_name = "REFERENCE")]
    pub reference: String,
    /// Read a backup (OCI layout directory or tar) instead of a registry
    #[arg(long)]
    pub oci_layout: bool,
    /// Show only referrers of this artifact type (their own referrers are still followed)
    #[arg(long)]
    pub artifact_type: Option<String>,
    /// Levels of referrers to follow (default: all)
    #[arg(long)]
    pub depth: Option<usize>,
    #[command(flatten)]
    pub common: Common,
}

/// `oras verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The backup: an OCI layout directory, a tar archive, or s3://BUCKET/KEY or s3://BUCKET/PREFIX/
    #[arg(value_name = "PATH")]
    pub path: String,
    /// For an incremental backup: its base, when it is not where the backup recorded it
    /// (repeatable, for a chain)
    #[arg(long, value_name = "PATH")]
    pub base: Vec<String>,
    /// Blobs checked at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `oras copy`.
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source: <registry>/<repo>:<tag>|@<digest>, or with --from-oci-layout
    /// <path>[:<tag>|@<digest>]
    #[arg(value_name = "FROM")]
    pub from: String,
    /// Destination: <registry>/<repo>[:<tag>[,<tag>...]], or with --to-oci-layout <path>[:<tag>]
    #[arg(value_name = "TO")]
    pub to: String,
    /// Also copy referrers, recursively
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// The source is an OCI layout directory or tar
    #[arg(long)]
    pub from_oci_layout: bool,
    /// The destination is an OCI layout directory (or .tar)
    #[arg(long)]
    pub to_oci_layout: bool,
    #[command(flatten)]
    pub platforms: PlatformArgs,
    #[command(flatten)]
    pub common: Common,
}

/// `oras login`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  printf '%s' \"$PASSWORD\" | oras login -u alice --password-stdin registry.example\n  oras login --identity-token-stdin registry.example < token.txt\n  oras login localhost:5000        (on a terminal: asks for a username and a password)\n\nThe credentials go where the docker config says: the credential helper of the registry\n(credHelpers) or of every registry (credsStore), else the config's \"auths\" (base64, not\nencrypted). Nothing is stored unless the registry accepts them."
)]
pub struct LoginArgs {
    /// The registry: host[:port] (a scheme and path, as in https://index.docker.io/v1/, are
    /// ignored; docker.io means Docker Hub)
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `oras logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry: host[:port], as given to `oras login`
    #[arg(value_name = "REGISTRY")]
    pub registry: String,
    /// Docker config.json the credentials are in [default: $DOCKER_CONFIG/config.json, then
    /// ~/.docker/config.json]
    #[arg(long, value_name = "PATH")]
    pub registry_config: Option<PathBuf>,
}

/// `oras completion`.
#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `oras man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages to
    #[arg(long, default_value = ".")]
    pub dir: std::path::PathBuf,
}

/// `--format`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Human-readable text (for discover: a tree).
    #[default]
    #[value(alias = "tree")]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// `--distribution-spec`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistributionSpec {
    /// Use the referrers API only.
    #[value(name = "v1.1-referrers-api")]
    ReferrersApi,
    /// Use the referrers tag schema only.
    #[value(name = "v1.1-referrers-tag")]
    ReferrersTag,
}

/// A secret given as a flag (a password, a token): shown as `<redacted>` by `Debug`, so that the
/// command tree, which derives it, can never print one.
#[derive(Clone)]
pub struct SecretArg(String);

impl SecretArg {
    /// The secret itself, for the credentials it makes.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(SecretArg(s.to_string()))
    }
}

/// Flags shared by every command that talks to a registry.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Number of concurrent transfers [default: backup 3, restore 5]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// How referrers are found and recorded [default: the API where the registry has it, else the
    /// tag schema]
    #[arg(long, value_enum)]
    pub distribution_spec: Option<DistributionSpec>,
    /// Fail a blob transfer whose rate stays below this many bytes per second for --speed-time
    /// seconds (0: never)
    #[arg(long, value_name = "BYTES", env = "ORAS_SPEED_LIMIT", default_value_t = 1024)]
    pub speed_limit: u64,
    /// How long a blob transfer may stay below --speed-limit before it fails
    #[arg(long, value_name = "SECONDS", env = "ORAS_SPEED_TIME", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub speed_time: u64,
    /// Plain status lines instead of progress bars
    #[arg(long)]
    pub no_tty: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// How to reach registries: TLS, addresses, headers, time limits, the trace (`login` has these
/// too).
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// Use plain HTTP instead of HTTPS (localhost and 127.0.0.1 use HTTP by default)
    #[arg(long)]
    pub plain_http: bool,
    /// Allow connections to registries with invalid TLS certificates (insecure)
    #[arg(long)]
    pub insecure: bool,
    /// Trust this CA certificate (PEM) in addition to the system roots
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS
    #[arg(long, value_name = "PATH", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS
    #[arg(long, value_name = "PATH", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Resolve host:port to address[:port] instead of using DNS
    #[arg(long, value_name = "HOST:PORT:ADDRESS[:PORT]")]
    pub resolve: Vec<String>,
    /// Add a header to every request ('Name: value')
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Give up on a request for metadata (a manifest, a tag or referrers page, a token) not
    /// answered in full within this many seconds
    #[arg(long, value_name = "SECONDS", env = "ORAS_REQUEST_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub request_timeout: u64,
    /// Print an HTTP trace to stderr (credentials redacted); implies --no-tty
    #[arg(short = 'd', long)]
    pub debug: bool,
}

/// Where credentials come from: the flags, or the docker config.json they are stored in.
#[derive(Args, Debug, Clone)]
pub struct CredentialArgs {
    /// Docker config.json with stored credentials [default: $DOCKER_CONFIG/config.json, then
    /// ~/.docker/config.json]
    #[arg(long, value_name = "PATH")]
    pub registry_config: Option<PathBuf>,
    /// Registry username (for every registry named on the command line)
    #[arg(short = 'u', long, conflicts_with_all = ["identity_token", "identity_token_stdin"])]
    pub username: Option<String>,
    /// Registry password or token (prefer --password-stdin: this lands in shell history)
    #[arg(short = 'p', long, conflicts_with_all = ["password_stdin", "identity_token", "identity_token_stdin"])]
    pub password: Option<SecretArg>,
    /// Read the password from standard input
    #[arg(long, conflicts_with_all = ["identity_token", "identity_token_stdin"])]
    pub password_stdin: bool,
    /// OAuth2 identity (refresh) token (prefer --identity-token-stdin: this lands in shell history)
    #[arg(long, conflicts_with = "identity_token_stdin")]
    pub identity_token: Option<SecretArg>,
    /// Read the identity token from standard input
    #[arg(long)]
    pub identity_token_stdin: bool,
}

/// Tag selection by regular expression, applied to each repository's tag list.
#[derive(Args, Debug, Clone, Default)]
pub struct TagFilterArgs {
    /// Take only tags that match this regular expression (whole tag; repeatable: all must match)
    #[arg(long, value_name = "REGEX")]
    pub include_tags: Vec<String>,
    /// Leave out tags that match this regular expression (whole tag; repeatable: any excludes)
    #[arg(long, value_name = "REGEX")]
    pub exclude_tags: Vec<String>,
}

/// Platform selection of multi-platform indexes.
#[derive(Args, Debug, Clone, Default)]
pub struct PlatformArgs {
    /// Of a multi-platform index, only this platform's manifest (os/arch[/variant]), which then
    /// takes the tag; repeat it with --sparse-index
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Vec<crate::engine::Platform>,
    /// Keep the index itself (digest unchanged) with only the --platform manifests; the copy is
    /// marked partial
    #[arg(long, requires = "platform")]
    pub sparse_index: bool,
}

/// `oras backup`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  oras backup --include-referrers -o app.tar registry.example/team/app\n  oras backup -o ./backup registry.example/team/web:v2,v3 registry.example/team/api@sha256:...\n  oras backup -o s3://my-bucket/nightly/app.tar registry.example/team/app"
)]
pub struct BackupArgs {
    /// Where to write: a directory, a path ending in .tar for an archive, s3://BUCKET/KEY.tar or
    /// s3://BUCKET/PREFIX/ (AWS_* environment), or - for a tar stream on stdout
    #[arg(short = 'o', long, value_name = "PATH")]
    pub output: String,
    /// Also back up referrers (signatures, SBOMs, attestations), recursively
    #[arg(long)]
    pub include_referrers: bool,
    /// Name tags in index.json by their full reference (registry/repo:tag) even for one repository,
    /// as backups of several do
    #[arg(long)]
    pub full_reference: bool,
    /// Leave Docker's manifest.json out of a tar archive (it lets `docker load` take the images)
    #[arg(long)]
    pub no_docker_manifest: bool,
    /// The platform whose manifest stands for a multi-platform index in Docker's manifest.json
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", default_value = "linux/amd64")]
    pub docker_platform: crate::engine::Platform,
    /// Compress the archive (implied by an output ending in .tar.gz or .tar.zst; with -o -,
    /// compresses the stream)
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub compress: Option<crate::layout::compress::Compression>,
    #[command(flatten)]
    pub platforms: PlatformArgs,
    /// Repositories to back up: <registry>/<repo>[:<tag>[,<tag>...]] or <registry>/<repo>@<digest>;
    /// no tag means every tag; a registry alone means every repository its catalog lists
    #[arg(required = true, value_name = "REFERENCE")]
    pub references: Vec<String>,
    #[command(flatten)]
    pub filter: TagFilterArgs,
    /// With a registry alone: take only repositories whose path matches this glob (`*` stays within
    /// one path component, `**` crosses them; repeatable: any may match)
    #[arg(long, value_name = "GLOB")]
    pub include_repos: Vec<String>,
    /// With a registry alone: leave out repositories whose path matches this glob (repeatable)
    #[arg(long, value_name = "GLOB")]
    pub exclude_repos: Vec<String>,
    /// Take only the repositories of shard K of N (1 <= K <= N; by a stable hash of each
    /// repository's path), so that N runs split a registry without coordination
    #[arg(long, value_name = "K/N")]
    pub shard: Option<crate::commands::shard::Shard>,
    /// Write only what this earlier backup (and the backups it builds on) does not hold: an
    /// incremental backup, restored together with its base
    #[arg(long, value_name = "PATH")]
    pub base: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

/// `oras restore`.
#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  oras restore --input app.tar registry.example\n  oras restore --input app.tar registry.example/renamed/app:v1\n  oras restore --dry-run --input ./backup registry.example\n  oras restore --input app.tar --rules rules.json"
)]
pub struct RestoreArgs {
    /// The backup: an OCI layout directory, a tar archive, s3://BUCKET/KEY or s3://BUCKET/PREFIX/
    /// (AWS_* environment), or - for a tar stream on stdin; repeat it to restore several backups
    /// in one run (shards, an incremental backup and its base)
    #[arg(short = 'i', long, value_name = "PATH", required = true)]
    pub input: Vec<String>,
    /// Push only the tagged graphs, not their referrers
    #[arg(long)]
    pub exclude_referrers: bool,
    /// Check the backup and the target, report what would be pushed, push nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Gzip a docker save archive's uncompressed layers on the way (new layer digests; the
    /// image ID is kept); an OCI layout's blobs are always restored as they are
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub compress: Option<crate::layout::compress::Compression>,
    /// Where to restore: <registry> (original repository paths) or
    /// <registry>/<repo>[:<tag>[,<tag>...]]
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Restore as a rules file says (JSON, // comments allowed: settings and mappings of sources to
    /// targets), instead of TARGETs
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    #[command(flatten)]
    pub filter: TagFilterArgs,
    #[command(flatten)]
    pub common: Common,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_given_as_flags_never_show_in_debug_output() {
        let cli = Cli::try_parse_from([
            "oras",
            "repo",
            "tags",
            "-u",
            "alice",
            "-p",
            "pw-4f1e-secret",
            "reg.io/team/app",
        ])
        .expect("parses");
        let shown = format!("{cli:?}");
        assert!(
            !shown.contains("pw-4f1e-secret")
                && shown.contains("<redacted>")
                && shown.contains("alice"),
            "{shown}"
        );
        let cli = Cli::try_parse_from([
            "oras",
            "repo",
            "tags",
            "--identity-token",
            "idt-77aa-secret",
            "reg.io/team/app",
        ])
        .expect("parses");
        assert!(!format!("{cli:?}").contains("idt-77aa-secret"));
    }
}
