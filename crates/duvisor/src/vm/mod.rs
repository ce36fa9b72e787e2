//! A VM: set up through the driver (the only driver calls DuVisor makes), then run by its
//! vthreads and I/O threads with no driver involvement until it ends.

pub mod control;
pub mod gstage;
pub mod guest_panic;
pub mod layout;
pub mod memory;
pub mod watchdog;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dv_driver::{DriverStats, DvDriver, VmHandle};
use dvext::{Hart, Interrupter, TIMEBASE_HZ};

use crate::devices::bus::MmioBus;
use crate::devices::plic::Plic;
use crate::devices::rtc::Rtc;
use crate::devices::uart::Uart;
use crate::devices::virtio::blk::{Blk, Disk, DiskSpec};
use crate::devices::virtio::net::NetSpec;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::{GuestMem, VirtioDevice, VirtioMmio};
use crate::devices::ExternalInterruptSink;
use crate::fdt::{build_fdt_with_rng_seed, with_free_space, FdtSpec};
use crate::loader::{plan_firmware_layout, plan_layout};
use crate::privileges::{drop_privileges, RunAs};
use crate::sandbox::ThreadClass;
use crate::stats::{ExitStats, EXIT_KINDS};
use crate::vcpu;
use control::{HartSlot, Outcome, VmControl};
use gstage::{GStage, RAM_PERMS};
use layout::*;
use memory::GuestRam;

/// ISA advertised to the guest (what the hart implements).
pub const GUEST_ISA: &str = "rv64imafdc_zicsr_zifencei_zicntr_zihintpause_sstc";
/// Device-tree window reserved below the top of RAM.
const FDT_MAX: u64 = 64 * 1024;
/// Default command line: the 16550A console, and a kernel panic reboots (so it ends the VM
/// with a non-zero status instead of hanging).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

/// What the boot vCPU starts in.
#[derive(Debug, Clone)]
pub enum Boot {
    /// A Linux `Image`, loaded with its initrd and command line as a boot loader would.
    Kernel {
        image: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    /// An S-mode boot loader (a raw binary such as U-Boot's `u-boot.bin`), entered as a kernel
    /// is; it finds the kernel itself, on the disks.
    Firmware(PathBuf),
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub boot: Boot,
    pub cpus: u32,
    pub memory: u64,
    /// Map all of guest RAM in the G-stage table before boot instead of on first touch.
    pub map_all: bool,
    /// virtio-blk disks, in virtio-mmio slot order.
    pub disks: Vec<DiskSpec>,
    /// virtio-net devices, after the disks.
    pub nets: Vec<NetSpec>,
    /// A virtio-rng device, last.
    pub rng: bool,
    /// End the VM when a vCPU stays locked up (interrupts off, one pending) this long.
    pub watchdog: Option<Duration>,
    /// Compile blocks run this many times to host code; None: interpret everything.
    pub jit_threshold: Option<u32>,
    /// Give up every capability (and switch to `run_as`, if given) once the disks, network
    /// back ends and other host resources are open, before any VM thread starts.
    pub drop_privileges: bool,
    pub run_as: Option<RunAs>,
}

/// State shared by the vthreads and I/O threads of one VM.
pub struct VmShared {
    pub ram: GuestRam,
    gstage: Mutex<GStage>,
    pub bus: MmioBus,
    pub irq: Interrupter,
    pub harts: Vec<HartSlot>,
    pub ncpus: u32,
    pub control: VmControl,
    pub stats: ExitStats,
    console: Mutex<Box<dyn Write + Send>>,
    retired: Mutex<dvext::HartStats>,
    pub watchdog: Option<Duration>,
    panic: Arc<guest_panic::PanicState>,
}

impl VmShared {
    /// Stop the VM with `o` (first outcome wins) and get every vthread out of the guest.
    pub fn stop(&self, o: Outcome) {
        // With panic=N the kernel resets after panicking: report the panic, not the reset.
        let o = match (o, self.panic.message()) {
            (Outcome::Reset { .. }, Some(m)) => Outcome::Panicked(m),
            (o, _) => o,
        };
        if self.control.stop(o) {
            self.kick_all();
        }
    }

    pub fn kick_all(&self) {
        for v in 0..self.ncpus {
            let _ = self.irq.kick(v);
            self.harts[v as usize].wake();
        }
    }

    pub fn console_write(&self, b: &[u8]) {
        let mut c = self.console.lock().unwrap_or_else(|e| e.into_inner());
        let _ = c.write_all(b);
        let _ = c.flush();
    }

    /// Map the guest RAM around `gpa` in the G-stage table: its 2 MiB region when that lies
    /// wholly in RAM, else its 4 KiB page.
    pub fn map_ram(&self, gpa: u64) -> Result<(), gstage::GStageError> {
        let mut g = self.gstage.lock().unwrap_or_else(|e| e.into_inner());
        let big = gpa & !(0x20_0000 - 1);
        if self.ram.contains(big, 0x20_0000) {
            let hpa = self.ram.hpa(big).expect("RAM");
            if hpa % 0x20_0000 == 0 {
                return g.map(big, hpa, 0x20_0000, RAM_PERMS);
            }
        }
        let page = gpa & !0xfff;
        g.map(page, self.ram.hpa(page).expect("RAM"), 0x1000, RAM_PERMS)
    }

    pub(crate) fn retire_hart(&self, hart: &Hart) {
        let s = hart.stats();
        let mut r = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        r.instret += s.instret;
        r.blocks_built += s.blocks_built;
        r.block_flushes += s.block_flushes;
        r.fence_i += s.fence_i;
        r.tlb_fills += s.tlb_fills;
        r.tlb_refound += s.tlb_refound;
        r.tlb_flushes += s.tlb_flushes;
        r.pauses += s.pauses;
        r.pause_yields += s.pause_yields;
        r.jit.compiled += s.jit.compiled;
        r.jit.parts += s.jit.parts;
        r.jit.code_bytes += s.jit.code_bytes;
        r.jit.compile_ns += s.jit.compile_ns;
        r.jit.resets += s.jit.resets;
        r.jit.failed += s.jit.failed;
        r.jit.shared += s.jit.shared;
        r.jit.inline += s.jit.inline;
        r.jit.entered += s.jit.entered;
        r.jit.chained += s.jit.chained;
    }
}

/// PLIC outputs become vEXT doorbells on the target vCPU.
struct DoorbellSink(Interrupter);

impl ExternalInterruptSink for DoorbellSink {
    fn set_external(&self, hart: usize, level: bool) {
        let _ = self.0.set_external(hart as u32, level);
    }
}

/// What a finished VM reports.
#[derive(Debug)]
pub struct VmReport {
    pub outcome: Outcome,
    pub wall: Duration,
    pub exits: Vec<(&'static str, u64)>,
    pub total_exits: u64,
    pub hart_stats: dvext::HartStats,
    pub driver_setup: DriverStats,
    pub driver_end: DriverStats,
    pub gstage_mapped: u64,
}

impl VmReport {
    pub fn print_stats(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let secs = self.wall.as_secs_f64().max(1e-9);
        writeln!(out, "--- duvisor statistics ---")?;
        writeln!(out, "wall time            {:.3} s", secs)?;
        let h = &self.hart_stats;
        writeln!(
            out,
            "guest instructions   {} ({:.1} MIPS)",
            h.instret,
            h.instret as f64 / secs / 1e6
        )?;
        writeln!(
            out,
            "decoded blocks       {} built, {} fence.i, {} cache flushes",
            h.blocks_built, h.fence_i, h.block_flushes
        )?;
        writeln!(
            out,
            "software TLB         {} walks, {} misses served by evicted entries, {} flushes",
            h.tlb_fills, h.tlb_refound, h.tlb_flushes
        )?;
        writeln!(
            out,
            "spin-wait hints      {} pause, {} host CPU yields (one per run of 32)",
            h.pauses, h.pause_yields
        )?;
        if h.jit.compiled + h.jit.failed > 0 {
            writeln!(
                out,
                "compiled regions     {} of {} blocks, {} reused (compiled for another vCPU or before a code-space reset), {} compiled on a vCPU thread ({} KiB of host code, {:.3} s compiling, {} code-space resets, {} refused)",
                h.jit.compiled,
                h.jit.parts,
                h.jit.shared,
                h.jit.inline,
                h.jit.code_bytes / 1024,
                h.jit.compile_ns as f64 / 1e9,
                h.jit.resets,
                h.jit.failed
            )?;
            writeln!(
                out,
                "compiled code        entered {} times from the run loop, {} times straight from another region",
                h.jit.entered, h.jit.chained
            )?;
        }
        writeln!(
            out,
            "VM exits             {} ({:.0}/s)",
            self.total_exits,
            self.total_exits as f64 / secs
        )?;
        for (name, n) in &self.exits {
            if *n > 0 {
                writeln!(out, "  {name:<24} {n}")?;
            }
        }
        writeln!(out, "g-stage mapped       {} MiB", self.gstage_mapped >> 20)?;
        let during = self.driver_end.total() - self.driver_setup.total();
        writeln!(
            out,
            "driver calls         {} at set-up, {} while the guest ran",
            self.driver_setup.total(),
            during
        )?;
        for (name, n) in self.driver_end.iter() {
            if n > 0 {
                writeln!(out, "  {name:<24} {n}")?;
            }
        }
        Ok(())
    }
}

fn host_random_seed() -> [u8; 64] {
    let mut seed = [0u8; 64];
    let mut got = 0;
    while got < seed.len() {
        // SAFETY: writes at most `len - got` bytes into our buffer.
        let n = unsafe { libc::getrandom(seed[got..].as_mut_ptr().cast(), seed.len() - got, 0) };
        if n <= 0 {
            break;
        }
        got += n as usize;
    }
    seed
}

fn host_ram() -> u64 {
    // SAFETY: sysinfo only writes the struct we pass.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a zeroed sysinfo.
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return u64::MAX;
    }
    si.totalram as u64 * si.mem_unit as u64
}

impl VmConfig {
    pub fn validate(&self) -> Result<()> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            bail!("--cpus must be between 1 and {MAX_CPUS}, got {}", self.cpus);
        }
        if self.memory < MIN_RAM {
            bail!(
                "--memory {} MiB is too small: at least {} MiB",
                self.memory >> 20,
                MIN_RAM >> 20
            );
        }
        if self.memory > MAX_RAM {
            bail!(
                "--memory {} MiB is too large: at most {} GiB",
                self.memory >> 20,
                MAX_RAM >> 30
            );
        }
        if self.memory % (2 << 20) != 0 {
            bail!(
                "--memory must be a multiple of 2 MiB, got {} bytes",
                self.memory
            );
        }
        let host = host_ram();
        if self.memory > host {
            bail!(
                "--memory {} MiB exceeds the host's {} MiB of RAM",
                self.memory >> 20,
                host >> 20
            );
        }
        Ok(())
    }
}

/// The virtio devices of `cfg`, in slot order: disks, network devices, rng. Every back end
/// is opened here, so a bad image or interface is reported before the guest starts.
fn virtio_devices(cfg: &VmConfig) -> Result<Vec<Arc<dyn VirtioDevice>>> {
    let mut devs: Vec<Arc<dyn VirtioDevice>> = Vec::new();
    for d in &cfg.disks {
        devs.push(Arc::new(Blk::new(Disk::open(d)?)));
    }
    crate::devices::virtio::net::check_host_ports(&cfg.nets)
        .map_err(|e| anyhow::anyhow!("--net: {e}"))?;
    for (i, n) in cfg.nets.iter().enumerate() {
        devs.push(crate::devices::virtio::net::open(n, i)?);
    }
    if cfg.rng {
        devs.push(Arc::new(Rng));
    }
    if devs.len() > VIRTIO_SLOTS as usize {
        bail!(
            "{} virtio devices requested, but there are only {VIRTIO_SLOTS} virtio-mmio slots",
            devs.len()
        );
    }
    Ok(devs)
}

/// What a path is, for an error that says why it was refused.
pub(crate) fn file_kind(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Read a kernel or initrd: a regular file of at most `limit` bytes (the guest's RAM). Opened
/// without blocking and checked on the open descriptor, so a FIFO cannot hang us, a device
/// such as /dev/zero cannot grow us without bound, and a huge sparse file is refused before a
/// byte of it is read.
fn read_file(what: &str, p: &PathBuf, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(p)
        .with_context(|| format!("{what} {}", p.display()))?;
    let md = f
        .metadata()
        .with_context(|| format!("{what} {}", p.display()))?;
    if !md.file_type().is_file() {
        bail!(
            "{what} {} is {}, not a regular file",
            p.display(),
            file_kind(md.file_type())
        );
    }
    if md.len() > limit {
        bail!(
            "{what} {} is {} bytes, more than the guest's {} MiB of RAM",
            p.display(),
            md.len(),
            limit >> 20
        );
    }
    let mut data = Vec::with_capacity(md.len() as usize);
    // One byte past the limit tells a file that grew while we read it from one that fits.
    f.take(limit + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {what} {}", p.display()))?;
    if data.len() as u64 > limit {
        bail!(
            "{what} {} grew past the guest's {} MiB of RAM while it was read",
            p.display(),
            limit >> 20
        );
    }
    Ok(data)
}

/// A VM ready to boot.
pub struct Vm {
    shared: Arc<VmShared>,
    harts: Vec<Hart>,
    driver: Arc<DvDriver>,
    handle: VmHandle,
    uart: Arc<Uart>,
    entry: u64,
    fdt_addr: u64,
    driver_setup: DriverStats,
}

impl Vm {
    /// Create the VM: validate, load the driver, take memory and vCPUs, build devices and the
    /// device tree, load the kernel.
    pub fn build(cfg: &VmConfig, console_out: impl Fn() -> Box<dyn Write + Send>) -> Result<Vm> {
        cfg.validate()?;
        let (image, initrd, cmdline, layout) = match &cfg.boot {
            Boot::Kernel {
                image,
                initrd,
                cmdline,
            } => {
                let kernel = read_file("kernel", image, cfg.memory)?;
                let initrd = initrd
                    .as_ref()
                    .map(|p| read_file("initrd", p, cfg.memory))
                    .transpose()?;
                let layout = plan_layout(
                    RAM_BASE,
                    cfg.memory,
                    &kernel,
                    initrd.as_ref().map(|i| i.len() as u64),
                    FDT_MAX,
                )
                .with_context(|| format!("kernel {}", image.display()))?;
                (kernel, initrd, cmdline.as_str(), layout)
            }
            Boot::Firmware(path) => {
                let fw = read_file("firmware", path, cfg.memory)?;
                let layout = plan_firmware_layout(RAM_BASE, cfg.memory, fw.len() as u64, FDT_MAX)
                    .with_context(|| format!("firmware {}", path.display()))?;
                // The boot loader writes /chosen/bootargs from its own configuration.
                (fw, None, "", layout)
            }
        };
        // Every host resource that may need privileges is opened here; then they go, before
        // the first of the VM's threads (the compiler thread, below) starts.
        let virtio = virtio_devices(cfg)?;
        if cfg.drop_privileges || cfg.run_as.is_some() {
            drop_privileges(cfg.run_as)?;
        }

        let table_bytes = GStage::table_bytes_for(cfg.memory).next_multiple_of(2 << 20);
        let driver = DvDriver::load(cfg.memory + table_bytes).context("loading the DV-driver")?;
        let handle = driver.create_vm()?;
        let ram_grant = driver.grant_memory(handle, cfg.memory)?;
        let ram = GuestRam::new(ram_grant.clone(), RAM_BASE);
        let mut gstage = GStage::new(driver.grant_memory(handle, table_bytes)?)?;
        let irq = driver.interrupter(handle);

        // One compiler thread for the VM: vCPUs share what it compiles.
        let jit_pool = match cfg.jit_threshold {
            Some(_) => Some(
                dvext::JitPool::with_settings(
                    "jit",
                    dvext::JitPoolSettings {
                        before_job: Some(crate::sandbox::enter_compiler),
                        ..Default::default()
                    },
                )
                .map_err(|e| anyhow::anyhow!("compiling tier: {e}"))?,
            ),
            None => None,
        };
        let mut harts = Vec::new();
        for id in 0..cfg.cpus {
            let mut h = driver.register_vcpu(handle, id)?;
            vcpu::init_hart(&mut h, gstage.hugatp());
            if let Some(t) = cfg.jit_threshold {
                // Now, while executable mappings are still allowed (before the sandbox).
                h.enable_jit(t, jit_pool.as_ref())
                    .map_err(|e| anyhow::anyhow!("vCPU {id}: compiling tier: {e}"))?;
            }
            harts.push(h);
        }
        if cfg.map_all {
            let mut gpa = RAM_BASE;
            while gpa < ram.end() {
                gstage.map(gpa, ram.hpa(gpa).expect("RAM"), 0x20_0000, RAM_PERMS)?;
                gpa += 0x20_0000;
            }
        }

        let plic = Plic::new(cfg.cpus as usize, Arc::new(DoorbellSink(irq.clone())));
        let panic = Arc::new(guest_panic::PanicState::default());
        let uart_out = guest_panic::PanicWatch::new(console_out(), panic.clone());
        let uart = Arc::new(Uart::new(plic.irq_line(UART_IRQ), Box::new(uart_out)));
        // The wall clock; its alarm thread starts now, before the sandbox.
        let rtc = Arc::new(Rtc::new(plic.irq_line(RTC_IRQ))?);
        let mut bus = MmioBus::new();
        bus.register(PLIC_BASE, PLIC_SIZE, plic.clone())?;
        bus.register(UART_BASE, UART_SIZE, uart.clone())?;
        bus.register(RTC_BASE, RTC_SIZE, rtc)?;

        let mut virtio_slots = Vec::new();
        if !virtio.is_empty() {
            let mem = Arc::new(GuestMem::from_grant(ram_grant, RAM_BASE)?);
            for (i, dev) in virtio.into_iter().enumerate() {
                let base = VIRTIO_BASE + i as u64 * VIRTIO_STRIDE;
                let irq = VIRTIO_IRQ0 + i as u32;
                let t = VirtioMmio::new(dev, mem.clone(), plic.irq_line(irq))?;
                bus.register(base, VIRTIO_STRIDE, Arc::new(t))?;
                virtio_slots.push((base, irq));
            }
        }

        let spec = FdtSpec {
            num_cpus: cfg.cpus,
            isa: GUEST_ISA.into(),
            mmu_type: "riscv,sv39".into(),
            timebase_hz: TIMEBASE_HZ as u32,
            mem_base: RAM_BASE,
            mem_size: cfg.memory,
            cmdline: cmdline.into(),
            initrd: layout.initrd,
            uart: (UART_BASE, UART_IRQ),
            rtc: (RTC_BASE, RTC_IRQ),
            plic: (PLIC_BASE, PLIC_SIZE, plic.ndev()),
            virtio: virtio_slots,
        };
        // Seed the guest's RNG from the host, as firmware does: without it the guest kernel
        // waits many seconds for entropy.
        let fdt = build_fdt_with_rng_seed(&spec, &host_random_seed())?;
        if fdt.len() as u64 > FDT_MAX {
            bail!(
                "device tree of {} bytes exceeds its {FDT_MAX}-byte window",
                fdt.len()
            );
        }
        let fdt = with_free_space(fdt, FDT_MAX as usize)?;
        ram.write(layout.kernel_addr, &image)?;
        if let (Some(data), Some((start, _))) = (&initrd, layout.initrd) {
            ram.write(start, data)?;
        }
        ram.write(layout.fdt_addr, &fdt)?;

        let shared = Arc::new(VmShared {
            ram,
            gstage: Mutex::new(gstage),
            bus,
            irq,
            harts: (0..cfg.cpus).map(|_| HartSlot::default()).collect(),
            ncpus: cfg.cpus,
            control: VmControl::default(),
            stats: ExitStats::default(),
            console: Mutex::new(console_out()),
            retired: Mutex::new(dvext::HartStats::default()),
            watchdog: cfg.watchdog,
            panic: panic.clone(),
        });
        panic.attach(&shared);
        let driver_setup = driver.stats();
        Ok(Vm {
            shared,
            harts,
            driver,
            handle,
            uart,
            entry: layout.entry,
            fdt_addr: layout.fdt_addr,
            driver_setup,
        })
    }

    pub fn shared(&self) -> &Arc<VmShared> {
        &self.shared
    }

    /// The descriptors the vCPUs write compiled code through (empty without the compiling
    /// tier): the sandbox lets vCPU threads write these and no others.
    pub fn code_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.harts.iter().filter_map(|h| h.jit_code_fd()).collect()
    }

    /// The shared state and the not-yet-started harts, for driving exits by hand instead of
    /// [`Vm::run`] (the SBI fuzzing harness in [`crate::fuzzing`]).
    #[doc(hidden)]
    pub fn into_parts(self) -> (Arc<VmShared>, Vec<Hart>) {
        (self.shared, self.harts)
    }

    /// Feed console input to the guest's UART.
    pub fn uart(&self) -> &Arc<Uart> {
        &self.uart
    }

    /// Boot hart 0 at the kernel entry and run until the VM stops.
    pub fn run(self) -> Result<VmReport> {
        let start = Instant::now();
        let shared = self.shared.clone();
        shared.harts[0].start(self.entry, self.fdt_addr);
        let mut threads = Vec::new();
        for hart in self.harts {
            let vm = shared.clone();
            let name = format!("vcpu{}", hart.vcpu_id());
            threads.push(crate::sandbox::spawn(
                ThreadClass::Vcpu,
                &name,
                move || vcpu::run_vcpu(vm, hart),
            )?);
        }
        if let Some(limit) = shared.watchdog {
            threads.push(watchdog::spawn(shared.clone(), limit)?);
        }
        for t in threads {
            if t.join().is_err() {
                shared.stop(Outcome::Error("a vCPU thread panicked".into()));
            }
        }
        let wall = start.elapsed();
        // Device I/O threads still hold guest memory: they stop before the driver revokes and
        // scrubs it (a late queue notification was served from scrubbed memory, and a device
        // could have written into it).
        shared.bus.quiesce_all();
        let driver_end = self.driver.stats();
        self.driver.destroy_vm(self.handle);
        let outcome = shared
            .control
            .outcome()
            .unwrap_or(Outcome::Error("VM ended without a reason".into()));
        let hart_stats = *shared.retired.lock().unwrap_or_else(|e| e.into_inner());
        let gstage_mapped = shared
            .gstage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mapped_bytes();
        Ok(VmReport {
            outcome,
            wall,
            exits: EXIT_KINDS
                .iter()
                .map(|k| (k.name(), shared.stats.get(*k)))
                .collect(),
            total_exits: shared.stats.total(),
            hart_stats,
            driver_setup: self.driver_setup,
            driver_end,
            gstage_mapped,
        })
    }
}
