//! Temporary: fetch the reference guest and print where it landed.
fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let dir = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(duvisor::guest_fetch::default_cache_dir);
    let t = std::time::Instant::now();
    let files = duvisor::guest_fetch::fetch_guest(&dir, true)?;
    println!("kernel={}", files.kernel.display());
    println!("initrd={}", files.initrd.display());
    println!("kernel_version={}", files.kernel_version);
    eprintln!("took {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}
