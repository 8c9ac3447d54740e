//! `sandbox-harness image`: builds a sandbox image offline now.

use std::process::ExitCode;
use std::time::Duration;

use sandbox_harness::images;

/// Flags of `image`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Which image.
    #[arg(value_enum)]
    which: ImageKind,
    /// Build the browser image's Debian base again even when it exists (newer packages).
    #[arg(long)]
    rebuild: bool,
}

/// The images `image` builds.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ImageKind {
    /// The default sandbox image (busybox userland plus the executor).
    Default,
    /// The browser sandbox image (Debian, Chromium, Xvfb, x11vnc, plus the executor).
    Browser,
}

/// Builds the image and says how long it took and how large it is.
pub async fn run(args: &ImageArgs) -> ExitCode {
    let docker = match sandbox_harness::backends::docker::connect().await {
        Ok(d) => d,
        Err(e) => return super::failure(&e),
    };
    let started = std::time::Instant::now();
    match args.which {
        ImageKind::Default => match images::ensure_sandbox_image(&docker).await {
            Ok(tag) => {
                println!("{tag} ready in {:.1} s", started.elapsed().as_secs_f64());
                ExitCode::SUCCESS
            }
            Err(e) => super::failure(&e),
        },
        ImageKind::Browser => {
            match images::browser::ensure_browser_image_report(&docker, args.rebuild).await {
                Ok(r) => {
                    print_browser(&r);
                    ExitCode::SUCCESS
                }
                Err(e) => super::failure(&e),
            }
        }
    }
}

fn print_browser(r: &images::browser::BrowserImageReport) {
    let secs =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    println!("{} ready in {:.1} s", r.tag, r.total.as_secs_f64());
    if r.built_base {
        println!(
            "  built the base {} (mmdebstrap into the engine) in {}",
            r.base_tag,
            secs(r.bootstrap)
        );
    } else {
        println!("  base {} was already built", r.base_tag);
    }
    if let Some(size) = r.size_bytes {
        println!("  image size {:.0} MB", size as f64 / 1e6);
    }
}
