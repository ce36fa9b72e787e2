//! The flattened device tree handed to the guest kernel, shaped like QEMU `virt`'s.
//!
//! ```text
//! / (compatible "riscv-virtio", #address-cells 2, #size-cells 2)
//! ├── chosen        bootargs, stdout-path, [linux,initrd-start/end], [rng-seed]
//! ├── aliases       serial0
//! ├── cpus          timebase-frequency
//! │   ├── cpu@N     riscv,isa + riscv,isa-base + riscv,isa-extensions, mmu-type
//! │   │   └── interrupt-controller   riscv,cpu-intc (the hart's local interrupts)
//! │   └── cpu-map   one cluster, one core per hart
//! ├── memory@…
//! └── soc (simple-bus)
//!     ├── plic@…          interrupts-extended = <&cpuN_intc 9> per hart: context N is hart N's
//!     │                   S-mode context (see `devices::plic`)
//!     ├── serial@…        ns16550a
//!     ├── rtc@…           google,goldfish-rtc
//!     └── virtio_mmio@…   one per virtio-mmio transport
//! ```
//!
//! There is no timer node (RISC-V timers are described by `timebase-frequency`) and no SBI node
//! (the kernel probes SBI).

use anyhow::{bail, ensure, Context, Result};
use vm_fdt::FdtWriter;

/// What the device tree describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdtSpec {
    pub num_cpus: u32,
    /// The ISA string, e.g. `rv64imafdc_zicsr_zifencei_zicntr_sstc`.
    pub isa: String,
    /// e.g. `riscv,sv48`.
    pub mmu_type: String,
    pub timebase_hz: u32,
    pub mem_base: u64,
    pub mem_size: u64,
    pub cmdline: String,
    /// `(start, end)` of the initrd in guest-physical memory, `end` exclusive.
    pub initrd: Option<(u64, u64)>,
    /// `(base, irq)`; the window is 0x100 bytes.
    pub uart: (u64, u32),
    /// `(base, irq)` of the Goldfish RTC; the window is 0x1000 bytes.
    pub rtc: (u64, u32),
    /// `(base, size, ndev)`, `ndev` being the highest source ID.
    pub plic: (u64, u64, u32),
    /// `(base, irq)` of each virtio-mmio transport; each window is 0x1000 bytes.
    pub virtio: Vec<(u64, u32)>,
}

/// Size of a virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Size of the UART window.
pub const UART_MMIO_SIZE: u64 = 0x100;
/// Size of the Goldfish RTC window.
pub const RTC_MMIO_SIZE: u64 = 0x1000;
/// The UART's input clock (`clock-frequency`).
pub const UART_CLOCK_HZ: u32 = 3_686_400;
/// The supervisor external interrupt number on a hart's local interrupt controller.
pub const IRQ_S_EXT: u32 = 9;
/// Cache-block size advertised for the Zicbom/Zicboz/Zicbop extensions when the ISA lists them.
const CACHE_BLOCK_SIZE: u32 = 64;

/// Build the device tree blob for `spec`.
pub fn build_fdt(spec: &FdtSpec) -> Result<Vec<u8>> {
    build(spec, None)
}

/// Like [`build_fdt`], adding `/chosen/rng-seed` (which lets the guest's random-number generator
/// start seeded instead of waiting for entropy).
pub fn build_fdt_with_rng_seed(spec: &FdtSpec, seed: &[u8]) -> Result<Vec<u8>> {
    build(spec, Some(seed))
}

/// Give `blob` free space at its end, up to `totalsize` bytes in all, as QEMU's device trees
/// have: a boot loader edits the tree it is handed in place, and U-Boot, adding `/chosen`
/// properties for the kernel, grows it by up to 12 KiB past the size in its header without
/// checking what lies there.
pub fn with_free_space(mut blob: Vec<u8>, totalsize: usize) -> Result<Vec<u8>> {
    ensure!(
        blob.len() >= 8 && blob[0..4] == [0xd0, 0x0d, 0xfe, 0xed],
        "not a device tree blob"
    );
    ensure!(
        totalsize >= blob.len() && u32::try_from(totalsize).is_ok(),
        "device tree of {} bytes does not fit in {totalsize}",
        blob.len()
    );
    blob.resize(totalsize, 0);
    blob[4..8].copy_from_slice(&(totalsize as u32).to_be_bytes());
    Ok(blob)
}

/// The `riscv,isa-base` and `riscv,isa-extensions` values for an ISA string: the base
/// (`rv64i`/`rv32i`/…) and the extension names in order, single letters first (including the base
/// letter; `g` expands to `i m a f d zicsr zifencei`), duplicates removed. Version suffixes on
/// single-letter extensions (`i2p1`) are dropped.
pub fn parse_isa(isa: &str) -> Result<(String, Vec<String>)> {
    let lower = isa.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("rv64")
        .map(|r| ("rv64", r))
        .or_else(|| lower.strip_prefix("rv32").map(|r| ("rv32", r)));
    let Some((xlen, rest)) = rest else {
        bail!("ISA string {isa:?} does not start with rv32 or rv64");
    };
    let mut exts: Vec<String> = Vec::new();
    let mut push = |e: &str| {
        if !exts.iter().any(|x| x == e) {
            exts.push(e.to_string());
        }
    };

    let mut chars = rest.char_indices().peekable();
    let base = match chars.next() {
        Some((_, 'i')) => {
            push("i");
            'i'
        }
        Some((_, 'e')) => {
            push("e");
            'e'
        }
        Some((_, 'g')) => {
            for e in ["i", "m", "a", "f", "d", "zicsr", "zifencei"] {
                push(e);
            }
            'i'
        }
        _ => bail!("ISA string {isa:?} has no base integer ISA (i, e or g) after {xlen}"),
    };

    // Single-letter extensions, up to the first multi-letter one.
    let mut multi_start = rest.len();
    while let Some(&(pos, c)) = chars.peek() {
        match c {
            '_' => {
                multi_start = pos + 1;
                break;
            }
            'z' | 's' | 'x' => {
                multi_start = pos;
                break;
            }
            // Version numbers: `2p1` and the like.
            '0'..='9' => {}
            'p' if pos > 0 && rest.as_bytes()[pos - 1].is_ascii_digit() => {}
            'a'..='y' => push(&c.to_string()),
            _ => bail!("ISA string {isa:?} has an invalid character {c:?}"),
        }
        chars.next();
    }
    for name in rest[multi_start..].split('_').filter(|s| !s.is_empty()) {
        ensure!(
            name.starts_with(['z', 's', 'x', 'h'])
                && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "ISA string {isa:?} has an invalid multi-letter extension {name:?}"
        );
        push(name);
    }
    Ok((format!("{xlen}{base}"), exts))
}

fn check_irq(what: &str, irq: u32, ndev: u32) -> Result<()> {
    ensure!(
        (1..=ndev).contains(&irq),
        "{what}: interrupt {irq} is outside the PLIC's sources 1..={ndev}"
    );
    Ok(())
}

fn build(spec: &FdtSpec, rng_seed: Option<&[u8]>) -> Result<Vec<u8>> {
    ensure!(spec.num_cpus >= 1, "the VM needs at least one CPU");
    ensure!(spec.mem_size > 0, "the VM needs memory");
    let (plic_base, plic_size, ndev) = spec.plic;
    let (uart_base, uart_irq) = spec.uart;
    check_irq("serial", uart_irq, ndev)?;
    let (rtc_base, rtc_irq) = spec.rtc;
    check_irq("rtc", rtc_irq, ndev)?;
    for &(base, irq) in &spec.virtio {
        check_irq(&format!("virtio_mmio@{base:x}"), irq, ndev)?;
    }
    if let Some((start, end)) = spec.initrd {
        ensure!(
            start <= end,
            "initrd end {end:#x} is below its start {start:#x}"
        );
    }
    let (isa_base, isa_exts) = parse_isa(&spec.isa)?;

    // Phandles: cpu N = 1 + 2N, its interrupt controller = 2 + 2N, then the PLIC.
    let cpu_phandle = |n: u32| 1 + 2 * n;
    let intc_phandle = |n: u32| 2 + 2 * n;
    let plic_phandle = 1 + 2 * spec.num_cpus;
    let serial_path = format!("/soc/serial@{uart_base:x}");

    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "riscv-virtio")?;
    fdt.property_string("model", "riscv-virtio,duvisor")?;

    let chosen = fdt.begin_node("chosen")?;
    // Empty under a boot loader, which writes its own.
    if !spec.cmdline.is_empty() {
        fdt.property_string("bootargs", &spec.cmdline)
            .context("kernel command line")?;
    }
    fdt.property_string("stdout-path", &serial_path)?;
    if let Some((start, end)) = spec.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", end)?;
    }
    if let Some(seed) = rng_seed {
        fdt.property("rng-seed", seed)?;
    }
    fdt.end_node(chosen)?;

    let aliases = fdt.begin_node("aliases")?;
    fdt.property_string("serial0", &serial_path)?;
    fdt.end_node(aliases)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", spec.timebase_hz)?;
    for n in 0..spec.num_cpus {
        let cpu = fdt.begin_node(&format!("cpu@{n:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_u32("reg", n)?;
        fdt.property_string("status", "okay")?;
        fdt.property_string("compatible", "riscv")?;
        fdt.property_string("riscv,isa", &spec.isa)?;
        fdt.property_string("riscv,isa-base", &isa_base)?;
        fdt.property_string_list("riscv,isa-extensions", isa_exts.clone())?;
        for (ext, prop) in [
            ("zicbom", "riscv,cbom-block-size"),
            ("zicboz", "riscv,cboz-block-size"),
            ("zicbop", "riscv,cbop-block-size"),
        ] {
            if isa_exts.iter().any(|e| e == ext) {
                fdt.property_u32(prop, CACHE_BLOCK_SIZE)?;
            }
        }
        fdt.property_string("mmu-type", &spec.mmu_type)?;
        fdt.property_phandle(cpu_phandle(n))?;
        let intc = fdt.begin_node("interrupt-controller")?;
        fdt.property_string("compatible", "riscv,cpu-intc")?;
        fdt.property_u32("#interrupt-cells", 1)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_phandle(intc_phandle(n))?;
        fdt.end_node(intc)?;
        fdt.end_node(cpu)?;
    }
    let cpu_map = fdt.begin_node("cpu-map")?;
    let cluster = fdt.begin_node("cluster0")?;
    for n in 0..spec.num_cpus {
        let core = fdt.begin_node(&format!("core{n}"))?;
        fdt.property_u32("cpu", cpu_phandle(n))?;
        fdt.end_node(core)?;
    }
    fdt.end_node(cluster)?;
    fdt.end_node(cpu_map)?;
    fdt.end_node(cpus)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", spec.mem_base))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[spec.mem_base, spec.mem_size])?;
    fdt.end_node(memory)?;

    let soc = fdt.begin_node("soc")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_null("ranges")?;

    let plic = fdt.begin_node(&format!("plic@{plic_base:x}"))?;
    fdt.property_string_list(
        "compatible",
        vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
    )?;
    fdt.property_array_u64("reg", &[plic_base, plic_size])?;
    fdt.property_u32("#address-cells", 0)?;
    fdt.property_u32("#interrupt-cells", 1)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("riscv,ndev", ndev)?;
    let ext: Vec<u32> = (0..spec.num_cpus)
        .flat_map(|n| [intc_phandle(n), IRQ_S_EXT])
        .collect();
    fdt.property_array_u32("interrupts-extended", &ext)?;
    fdt.property_phandle(plic_phandle)?;
    fdt.end_node(plic)?;

    let serial = fdt.begin_node(&format!("serial@{uart_base:x}"))?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &[uart_base, UART_MMIO_SIZE])?;
    fdt.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    fdt.property_u32("interrupts", uart_irq)?;
    fdt.property_u32("interrupt-parent", plic_phandle)?;
    fdt.end_node(serial)?;

    let rtc = fdt.begin_node(&format!("rtc@{rtc_base:x}"))?;
    fdt.property_string("compatible", "google,goldfish-rtc")?;
    fdt.property_array_u64("reg", &[rtc_base, RTC_MMIO_SIZE])?;
    fdt.property_u32("interrupts", rtc_irq)?;
    fdt.property_u32("interrupt-parent", plic_phandle)?;
    fdt.end_node(rtc)?;

    for &(base, irq) in &spec.virtio {
        let node = fdt.begin_node(&format!("virtio_mmio@{base:x}"))?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.property_array_u64("reg", &[base, VIRTIO_MMIO_SIZE])?;
        fdt.property_u32("interrupts", irq)?;
        fdt.property_u32("interrupt-parent", plic_phandle)?;
        fdt.end_node(node)?;
    }
    fdt.end_node(soc)?;

    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdt::node::FdtNode;
    use fdt::Fdt;

    fn spec() -> FdtSpec {
        FdtSpec {
            num_cpus: 2,
            isa: "rv64imafdc_zicsr_zifencei_zicntr_sstc".into(),
            mmu_type: "riscv,sv48".into(),
            timebase_hz: 10_000_000,
            mem_base: 0x8000_0000,
            mem_size: 0x1_0000_0000,
            cmdline: "console=ttyS0 root=/dev/vda1 rw".into(),
            initrd: Some((0x1_7c00_0000, 0x1_7e12_3456)),
            uart: (0x1000_0000, 10),
            rtc: (0x10_1000, 11),
            plic: (0x0c00_0000, 0x60_0000, 95),
            virtio: vec![(0x1000_1000, 1), (0x1000_2000, 2)],
        }
    }

    fn prop<'a>(node: &FdtNode<'_, 'a>, name: &str) -> &'a [u8] {
        node.property(name)
            .unwrap_or_else(|| panic!("{} has no {name}", node.name))
            .value
    }

    fn cells(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn u64_prop(node: &FdtNode<'_, '_>, name: &str) -> u64 {
        u64::from_be_bytes(prop(node, name).try_into().unwrap())
    }

    fn str_prop<'a>(node: &FdtNode<'_, 'a>, name: &str) -> &'a str {
        node.property(name).and_then(|p| p.as_str()).unwrap()
    }

    fn str_list(bytes: &[u8]) -> Vec<&str> {
        bytes
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| std::str::from_utf8(s).unwrap())
            .collect()
    }

    /// `(address, size)` pairs of a 2+2-cell `reg`.
    fn reg(node: &FdtNode<'_, '_>) -> Vec<(u64, u64)> {
        cells(prop(node, "reg"))
            .chunks_exact(4)
            .map(|c| {
                (
                    u64::from(c[0]) << 32 | u64::from(c[1]),
                    u64::from(c[2]) << 32 | u64::from(c[3]),
                )
            })
            .collect()
    }

    #[test]
    fn tree_parses_back_with_the_expected_nodes() {
        let blob = build_fdt(&spec()).unwrap();
        let fdt = Fdt::new(&blob).unwrap();

        let root = fdt.root();
        assert_eq!(root.compatible().first(), "riscv-virtio");
        assert_eq!(root.cell_sizes().address_cells, 2);
        assert_eq!(root.cell_sizes().size_cells, 2);
        assert!(root.model().starts_with("riscv-virtio"));

        let chosen = fdt.chosen();
        assert_eq!(chosen.bootargs(), Some("console=ttyS0 root=/dev/vda1 rw"));
        assert_eq!(chosen.stdout().unwrap().name, "serial@10000000");
        let chosen_node = fdt.find_node("/chosen").unwrap();
        assert_eq!(
            str_prop(&chosen_node, "stdout-path"),
            "/soc/serial@10000000"
        );
        assert_eq!(u64_prop(&chosen_node, "linux,initrd-start"), 0x1_7c00_0000);
        assert_eq!(u64_prop(&chosen_node, "linux,initrd-end"), 0x1_7e12_3456);
        assert!(chosen_node.property("rng-seed").is_none());
        assert_eq!(
            fdt.aliases().unwrap().resolve("serial0"),
            Some("/soc/serial@10000000")
        );

        let mem = fdt.find_node("/memory@80000000").unwrap();
        assert_eq!(str_prop(&mem, "device_type"), "memory");
        assert_eq!(reg(&mem), vec![(0x8000_0000, 0x1_0000_0000)]);

        // CPUs and their interrupt controllers.
        let cpus_node = fdt.find_node("/cpus").unwrap();
        assert_eq!(
            cells(prop(&cpus_node, "timebase-frequency")),
            vec![10_000_000]
        );
        let cpus: Vec<_> = fdt.cpus().collect();
        assert_eq!(cpus.len(), 2);
        let mut intc_phandles = Vec::new();
        for n in 0..2u32 {
            let cpu = fdt.find_node(&format!("/cpus/cpu@{n}")).unwrap();
            assert_eq!(str_prop(&cpu, "device_type"), "cpu");
            assert_eq!(cells(prop(&cpu, "reg")), vec![n]);
            assert_eq!(str_prop(&cpu, "status"), "okay");
            assert_eq!(str_prop(&cpu, "compatible"), "riscv");
            assert_eq!(
                str_prop(&cpu, "riscv,isa"),
                "rv64imafdc_zicsr_zifencei_zicntr_sstc"
            );
            assert_eq!(str_prop(&cpu, "riscv,isa-base"), "rv64i");
            assert_eq!(
                str_list(prop(&cpu, "riscv,isa-extensions")),
                vec!["i", "m", "a", "f", "d", "c", "zicsr", "zifencei", "zicntr", "sstc"]
            );
            assert_eq!(str_prop(&cpu, "mmu-type"), "riscv,sv48");
            let intc = cpu
                .children()
                .find(|c| c.name == "interrupt-controller")
                .unwrap();
            assert_eq!(intc.compatible().unwrap().first(), "riscv,cpu-intc");
            assert_eq!(intc.interrupt_cells(), Some(1));
            assert!(intc.property("interrupt-controller").is_some());
            intc_phandles.push(cells(prop(&intc, "phandle"))[0]);
            // cpu-map points at this cpu.
            let core = fdt
                .find_node(&format!("/cpus/cpu-map/cluster0/core{n}"))
                .unwrap();
            let target = fdt.find_phandle(cells(prop(&core, "cpu"))[0]).unwrap();
            assert_eq!(target.name, format!("cpu@{n}"));
        }

        // The PLIC: one S-mode external interrupt context per hart, in hart order.
        let plic = fdt.find_node("/soc/plic@c000000").unwrap();
        assert_eq!(
            str_list(prop(&plic, "compatible")),
            vec!["sifive,plic-1.0.0", "riscv,plic0"]
        );
        assert_eq!(reg(&plic), vec![(0x0c00_0000, 0x60_0000)]);
        assert_eq!(cells(prop(&plic, "riscv,ndev")), vec![95]);
        assert_eq!(cells(prop(&plic, "#address-cells")), vec![0]);
        assert_eq!(plic.interrupt_cells(), Some(1));
        assert!(plic.property("interrupt-controller").is_some());
        assert_eq!(
            cells(prop(&plic, "interrupts-extended")),
            vec![intc_phandles[0], 9, intc_phandles[1], 9]
        );
        let plic_phandle = cells(prop(&plic, "phandle"))[0];
        assert_eq!(fdt.find_phandle(plic_phandle).unwrap().name, "plic@c000000");
        let soc = fdt.find_node("/soc").unwrap();
        assert_eq!(soc.compatible().unwrap().first(), "simple-bus");
        assert!(soc.property("ranges").is_some());

        let serial = fdt.find_node("/soc/serial@10000000").unwrap();
        assert_eq!(serial.compatible().unwrap().first(), "ns16550a");
        assert_eq!(reg(&serial), vec![(0x1000_0000, 0x100)]);
        assert_eq!(cells(prop(&serial, "clock-frequency")), vec![3_686_400]);
        assert_eq!(serial.interrupts().unwrap().collect::<Vec<_>>(), vec![10]);
        assert_eq!(serial.interrupt_parent().unwrap().name, "plic@c000000");

        // The Goldfish RTC, as on QEMU's virt.
        let rtc = fdt.find_node("/soc/rtc@101000").unwrap();
        assert_eq!(rtc.compatible().unwrap().first(), "google,goldfish-rtc");
        assert_eq!(reg(&rtc), vec![(0x10_1000, 0x1000)]);
        assert_eq!(rtc.interrupts().unwrap().collect::<Vec<_>>(), vec![11]);
        assert_eq!(rtc.interrupt_parent().unwrap().name, "plic@c000000");

        let virtio: Vec<_> = soc
            .children()
            .filter(|c| c.name.starts_with("virtio_mmio@"))
            .collect();
        assert_eq!(virtio.len(), 2);
        for (node, (base, irq)) in virtio
            .iter()
            .zip([(0x1000_1000u64, 1usize), (0x1000_2000, 2)])
        {
            assert_eq!(node.name, format!("virtio_mmio@{base:x}"));
            assert_eq!(node.compatible().unwrap().first(), "virtio,mmio");
            assert_eq!(reg(node), vec![(base, 0x1000)]);
            assert_eq!(node.interrupts().unwrap().collect::<Vec<_>>(), vec![irq]);
            assert_eq!(node.interrupt_parent().unwrap().name, "plic@c000000");
        }
        // No timer or SBI nodes.
        assert!(fdt.all_nodes().all(|n| !n.name.starts_with("timer")));
    }

    #[test]
    fn free_space_grows_the_blob_and_its_header_only() {
        let mut s = spec();
        s.cmdline.clear();
        let blob = build_fdt(&s).unwrap();
        let exact = blob.len();
        let padded = with_free_space(blob.clone(), 64 << 10).unwrap();
        assert_eq!(padded.len(), 64 << 10);
        assert_eq!(padded[4..8], (64u32 << 10).to_be_bytes());
        assert_eq!(
            padded[8..exact],
            blob[8..],
            "structure, strings, offsets unchanged"
        );
        assert!(padded[exact..].iter().all(|&b| b == 0));
        let fdt = Fdt::new(&padded).unwrap();
        assert_eq!(fdt.total_size(), 64 << 10);
        // No bootargs at all when there is no command line (a boot loader writes them).
        let chosen = fdt.find_node("/chosen").unwrap();
        assert!(chosen.property("bootargs").is_none());
        assert!(with_free_space(blob.clone(), exact - 1).is_err());
        assert!(with_free_space(vec![0; 64], 4096).is_err());
    }

    #[test]
    fn optional_parts() {
        let mut s = spec();
        s.initrd = None;
        s.virtio.clear();
        s.num_cpus = 1;
        let blob = build_fdt_with_rng_seed(&s, &[7; 32]).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        assert!(chosen.property("linux,initrd-start").is_none());
        assert!(chosen.property("linux,initrd-end").is_none());
        assert_eq!(prop(&chosen, "rng-seed"), &[7; 32]);
        assert_eq!(fdt.cpus().count(), 1);
        assert!(fdt.find_node("/soc/virtio_mmio").is_none());
        let plic = fdt.find_node("/soc/plic@c000000").unwrap();
        assert_eq!(cells(prop(&plic, "interrupts-extended")).len(), 2);
    }

    #[test]
    fn cache_block_sizes_follow_the_isa() {
        let mut s = spec();
        s.isa = "rv64imafdc_zicbom_zicboz_zicsr".into();
        let blob = build_fdt(&s).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let cpu = fdt.find_node("/cpus/cpu@0").unwrap();
        assert_eq!(cells(prop(&cpu, "riscv,cbom-block-size")), vec![64]);
        assert_eq!(cells(prop(&cpu, "riscv,cboz-block-size")), vec![64]);
        assert!(cpu.property("riscv,cbop-block-size").is_none());
    }

    #[test]
    fn invalid_specs_are_rejected() {
        let mut s = spec();
        s.uart.1 = 96;
        assert!(build_fdt(&s).unwrap_err().to_string().contains("serial"));
        let mut s = spec();
        s.rtc.1 = 0;
        assert!(build_fdt(&s).unwrap_err().to_string().contains("rtc"));
        let mut s = spec();
        s.virtio.push((0x1000_3000, 0));
        assert!(build_fdt(&s).is_err());
        let mut s = spec();
        s.num_cpus = 0;
        assert!(build_fdt(&s).is_err());
        let mut s = spec();
        s.cmdline = "a\0b".into();
        assert!(build_fdt(&s).is_err());
        let mut s = spec();
        s.isa = "x86_64".into();
        assert!(build_fdt(&s).is_err());
        let mut s = spec();
        s.initrd = Some((0x2000, 0x1000));
        assert!(build_fdt(&s).is_err());
    }

    #[test]
    fn isa_strings_are_split_into_extensions() {
        let (base, exts) = parse_isa("rv64imafdc_zicsr_zifencei_zicntr_sstc").unwrap();
        assert_eq!(base, "rv64i");
        assert_eq!(
            exts,
            ["i", "m", "a", "f", "d", "c", "zicsr", "zifencei", "zicntr", "sstc"]
        );
        let (base, exts) = parse_isa("RV64GC_Sstc").unwrap();
        assert_eq!(base, "rv64i");
        assert_eq!(
            exts,
            ["i", "m", "a", "f", "d", "zicsr", "zifencei", "c", "sstc"]
        );
        // A multi-letter extension right after the single letters, and versions.
        let (base, exts) = parse_isa("rv32i2p1mazicsr_zifencei").unwrap();
        assert_eq!(base, "rv32i");
        assert_eq!(exts, ["i", "m", "a", "zicsr", "zifencei"]);
        let (_, exts) = parse_isa("rv64imafdcv_zba_zbb_zvl128b_zicsr_zicsr").unwrap();
        assert_eq!(
            exts,
            ["i", "m", "a", "f", "d", "c", "v", "zba", "zbb", "zvl128b", "zicsr"]
        );
        assert!(parse_isa("rv64").is_err());
        assert!(parse_isa("rv128i").is_err());
        assert!(parse_isa("rv64m").is_err());
        assert!(parse_isa("rv64i_q!").is_err());
        assert!(parse_isa("rv64i_foo").is_err());
        assert!(parse_isa("rv64i-m").is_err());
    }
}
