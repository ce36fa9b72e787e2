//! `duvisor`: the user-level hypervisor's command-line entry point.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use duvisor::cli::{Cli, Command, MachineArgs};
use duvisor::console::{stdin_is_tty, Console};
use duvisor::devices::virtio::blk::DiskSpec;
use duvisor::sandbox::ThreadClass;
use duvisor::vm::control::Outcome;
use duvisor::vm::{Boot, Vm, VmConfig, DEFAULT_CMDLINE};
use guest_fetch::disk::{self, DiskOptions};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DUVISOR_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        e.exit();
    }
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("duvisor: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Run(a) => {
            let cfg = config(a.boot(), &a.machine);
            run(cfg, &a.machine)
        }
        Command::FetchGuest(a) => {
            let dir = a.cache.unwrap_or_else(guest_fetch::default_cache_dir);
            if let Some(out) = a.disk {
                let mut opts = DiskOptions::default();
                if let Some(size) = a.size {
                    opts.size = size;
                }
                if let Some(key) = a.ssh_key {
                    opts.ssh_key = Some(disk::read_ssh_key(&key)?);
                }
                if let Some(h) = a.hostname {
                    opts.hostname = h;
                }
                let img = disk::build_disk(&out, &opts, &dir, true)?;
                println!("disk: {}", img.path.display());
                println!("root: UUID={}", img.root_uuid);
                return Ok(0);
            }
            let g = guest_fetch::fetch_guest(&dir, true)?;
            println!("kernel: {}", g.kernel.display());
            println!("initrd: {}", g.initrd.display());
            Ok(0)
        }
        Command::Demo(a) => {
            let dir = a.cache.unwrap_or_else(guest_fetch::default_cache_dir);
            if let Some(image) = a.disk_image {
                let path = image.unwrap_or_else(|| dir.join("debian-disk").join("demo.img"));
                if !path.exists() {
                    disk::build_disk(&path, &DiskOptions::default(), &dir, true)?;
                }
                let mut cfg = config(Boot::Firmware(disk::UBOOT.into()), &a.machine);
                // The image is the first disk (vda), as its extlinux.conf and U-Boot expect.
                cfg.disks.insert(
                    0,
                    DiskSpec {
                        path,
                        readonly: false,
                    },
                );
                return run(cfg, &a.machine);
            }
            let g = guest_fetch::fetch_guest(&dir, true)?;
            let boot = Boot::Kernel {
                image: g.kernel,
                initrd: Some(g.initrd),
                cmdline: DEFAULT_CMDLINE.into(),
            };
            let cfg = config(boot, &a.machine);
            run(cfg, &a.machine)
        }
    }
}

fn config(boot: Boot, m: &MachineArgs) -> VmConfig {
    VmConfig {
        boot,
        cpus: m.cpus,
        memory: m.memory,
        map_all: m.map_all,
        disks: m.disks.clone(),
        nets: m.nets.clone(),
        rng: m.rng,
        watchdog: m.watchdog,
        jit_threshold: (!m.no_jit).then_some(m.jit_threshold),
        drop_privileges: true,
        run_as: m.user,
    }
}

fn run(cfg: VmConfig, m: &MachineArgs) -> Result<u8> {
    let console = Console::new(stdin_is_tty())?;
    let vm = Vm::build(&cfg, || console.output())?;
    // Set-up is over: from here on every thread keeps to the sandbox's allow-list, the main
    // thread to its class's, and threads start through the sandbox's spawner.
    if m.no_sandbox {
        tracing::warn!("running without the seccomp sandbox (--no-sandbox)");
    } else {
        duvisor::sandbox::install(ThreadClass::Main, &vm.code_fds())?;
    }
    let uart = vm.uart().clone();
    let shared = Arc::clone(vm.shared());
    console.spawn_input(
        move |b| uart.enqueue_input(b),
        move || shared.stop(Outcome::Quit),
    )?;
    let report = vm.run()?;
    drop(console);
    if m.stats {
        report.print_stats(&mut std::io::stderr())?;
        if m.no_sandbox {
            eprintln!("sandbox              off (--no-sandbox)");
        } else {
            let classes: Vec<String> = ThreadClass::ALL
                .iter()
                .map(|c| format!("{} {}", c.name(), c.calls().count()))
                .collect();
            eprintln!(
                "sandbox              seccomp, {} system calls allowed; per thread class: {}",
                duvisor::sandbox::POLICY.len(),
                classes.join(", ")
            );
        }
    }
    let code = report.outcome.exit_code();
    if code != 0 {
        eprintln!("duvisor: {}", report.outcome.describe());
    }
    Ok(code as u8)
}
