//! `cvdmirror export` and `cvdmirror import`: the two ends of an
//! air-gapped mirror. Export writes the published set into one bundle file;
//! import checks it against its manifest, verifies every file as `sync`
//! does, and publishes it only if all of it passes (`--dry-run`: shows and
//! verifies, publishes nothing). See docs/air-gapped.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail};
use clap::Args;

use crate::config::flags::{LogFormat, ServeArgs, SyncArgs, TrustArgs};
use crate::config::{Config, DEFAULT_ROOT};
use crate::rate::human_bytes;
use crate::sync::Quiet;
use crate::sync::bundle::import::Importer;
use crate::sync::bundle::{self, Bundle, Kind, Manifest};
use crate::sync::publish::PRIVATE_DIR;

/// Flags of `cvdmirror export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Read settings (the root) from this TOML file.
    #[arg(long, short = 'c', env = "CVDMIRROR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The served directory to export (default: ./mirror).
    #[arg(long, short = 'r', env = "CVDMIRROR_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// The bundle to write: a tar file, replaced atomically if it exists.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: PathBuf,

    /// Export only this database (repeatable; default: every database
    /// published in the root).
    #[arg(long = "db", value_name = "NAME", value_delimiter = ',')]
    pub databases: Vec<String>,

    /// Format of the diagnostic log on standard error.
    #[arg(long, env = "CVDMIRROR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Flags of `cvdmirror import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The bundle written by `cvdmirror export` (or a directory it was
    /// unpacked into).
    #[arg(value_name = "FILE")]
    pub bundle: PathBuf,

    /// Read settings (root, trusted keys, `.sign` roots, signature policy,
    /// retention) from this TOML file.
    #[arg(long, short = 'c', env = "CVDMIRROR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The served directory to publish into (default: ./mirror).
    #[arg(long, short = 'r', env = "CVDMIRROR_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Show what is in the bundle and verify every file as `sync` would,
    /// without publishing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Import only this database (repeatable; default: every database in
    /// the bundle).
    #[arg(long = "db", value_name = "NAME", value_delimiter = ',')]
    pub databases: Vec<String>,

    /// Which keys, roots and signatures a file must verify with, as for
    /// `sync`.
    #[command(flatten)]
    pub trust: TrustArgs,

    /// Format of the diagnostic log on standard error.
    #[arg(long, env = "CVDMIRROR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Writes the bundle.
pub async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&ServeArgs {
        config: args.config,
        root: args.root,
        ..Default::default()
    })?;
    let root = config.default_site.root.clone();
    if !root.is_dir() {
        bail!("root {} is not a directory", root.display());
    }
    if let (Ok(root), Some(Ok(dir))) = (
        root.canonicalize(),
        absolute_parent(&args.out).map(|p| p.canonicalize()),
    ) && dir.starts_with(&root)
    {
        bail!(
            "{} is inside the served root {}: the bundle would be served to clients; write it elsewhere",
            args.out.display(),
            root.display()
        );
    }
    let out = args.out.clone();
    let databases = args.databases.clone();
    let task_root = root.clone();
    let manifest =
        tokio::task::spawn_blocking(move || bundle::export(&task_root, &out, &databases))
            .await?
            .map_err(|e| anyhow!("cannot export {}: {e}", root.display()))?;
    println!("wrote {}", args.out.display());
    print_summary(&manifest, "every file hashed into the manifest");
    Ok(())
}

/// Checks, verifies and (unless `--dry-run`) publishes a bundle.
pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let config = Config::resolve(&ServeArgs {
        config: args.config,
        root: args.root,
        sync: SyncArgs {
            trust: args.trust,
            ..Default::default()
        },
        ..Default::default()
    })?;
    let root = config.default_site.root.clone();
    let unchanged = |e: &dyn std::fmt::Display| {
        anyhow!(
            "bundle {}: {e}\nnothing was imported; nothing in {} changed",
            args.bundle.display(),
            root.display()
        )
    };
    let path = args.bundle.clone();
    let opened = tokio::task::spawn_blocking(move || Bundle::open(&path)).await?;
    let bundle = Arc::new(opened.map_err(|e| match &e {
        // The bundle itself is unreadable: say so once, naming it.
        bundle::BundleError::Io { path, source } if *path == args.bundle => anyhow!(
            "cannot read bundle {}: {source}\nnothing was imported; nothing in {} changed",
            path.display(),
            root.display()
        ),
        _ => unchanged(&e),
    })?);
    println!("bundle {}", args.bundle.display());
    if let Some(manifest) = bundle.manifest() {
        print_summary(manifest, "sizes and SHA-256 match the manifest");
    }
    if !root.is_dir() {
        if root.as_path() == Path::new(DEFAULT_ROOT) && !args.dry_run {
            std::fs::create_dir_all(&root)?;
        } else if !args.dry_run {
            bail!("root {} is not a directory", root.display());
        }
    }
    // Scratch space beside the root (it must hold the bundle's files once);
    // a dry run against a root that does not exist yet uses the temp dir.
    let work = if root.is_dir() {
        root.join(PRIVATE_DIR).join("import")
    } else {
        std::env::temp_dir().join(format!("cvdmirror-import-{}", std::process::id()))
    };
    let policy = config.sync.signatures;
    let importer = Importer::new(
        config.sync.engine_config(root.clone()),
        bundle,
        &args.databases,
        work,
    )
    .map_err(|e| unchanged(&e))?;
    println!("verifying every file as `sync` does (signatures: {policy})");
    if let Err(e) = importer.verify(&Quiet).await {
        return Err(unchanged(&format!("failed verification:\n  {e}")));
    }
    let before = importer.published()?;
    if args.dry_run {
        println!("verified: every file would be published; nothing was published (--dry-run)");
        for db in importer.databases() {
            let to = importer.manifest().databases[db].version;
            let what = match before.get(db).copied().flatten() {
                None => format!("would publish {to} (none published yet)"),
                Some(now) if now < to => format!("would update {now} -> {to}"),
                Some(now) if now == to => {
                    format!("at {to} already (missing cdiffs and .sign files would be added)")
                }
                Some(now) => format!("has {now}, newer than the bundle's {to}: would keep it"),
            };
            println!("{db:<12} {what}");
        }
        return Ok(());
    }
    let (report, signatures) = importer.publish(&Quiet).await.map_err(|e| {
        anyhow!(
            "bundle {}: publishing into {} failed: {e}",
            args.bundle.display(),
            root.display()
        )
    })?;
    for db in &report.databases {
        println!(
            "{}",
            super::sync::outcome_line(db, &signatures, "the bundle has")
        );
    }
    Ok(())
}

/// What a bundle holds, for a person deciding whether to import it.
fn print_summary(manifest: &Manifest, checked: &str) {
    println!(
        "  written {} by {} (bundle format {})",
        manifest.created, manifest.producer, manifest.version
    );
    for (db, entry) in &manifest.databases {
        let cdiffs: Vec<u32> = manifest
            .files_of(db)
            .filter(|f| f.kind == Kind::Cdiff)
            .map(|f| f.version)
            .collect();
        let range = match (cdiffs.first(), cdiffs.last()) {
            (Some(a), Some(b)) if a != b => format!(" ({a}-{b})"),
            (Some(a), _) => format!(" ({a})"),
            _ => String::new(),
        };
        let signs = manifest
            .files_of(db)
            .filter(|f| f.kind == Kind::Sign)
            .count();
        let size: u64 = manifest.files_of(db).map(|f| f.size).sum();
        println!(
            "  {db:<12} version {:<8} {} cdiffs{range}, {signs} .sign files, {}",
            entry.version,
            cdiffs.len(),
            human_bytes(size)
        );
    }
    println!(
        "  {} files, {} in all; {checked}",
        manifest.files.len(),
        human_bytes(manifest.total_size())
    );
}

fn absolute_parent(path: &Path) -> Option<PathBuf> {
    let parent = std::path::absolute(path).ok()?.parent()?.to_owned();
    Some(parent)
}
