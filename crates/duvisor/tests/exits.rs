//! Exit handling end to end: a small guest, packaged as a RISC-V Linux `Image` and booted by
//! the real `duvisor` binary, makes SBI calls and MMIO accesses and reports what it saw on the
//! console. Checks SBI results and error codes (SBI v2.0), MMIO emulation of each width,
//! compressed forms, access faults for holes, instruction fetch from MMIO, and how a VM ends.

mod common;

#[path = "../../dvext/tests/common/asm.rs"]
mod asm;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

const LOAD_ADDR: u64 = 0x8020_0000;

/// Image header (text_offset 2 MiB) + trap handler + print routine; `body` runs in between.
fn guest_image(body: &str) -> Vec<u8> {
    let src = format!(
        r#"
    .option norvc
_start:
    j real_start
    .word 0
    .dword 0x200000          # text_offset
    .dword 0x100000          # image_size
    .dword 0                 # flags (little endian)
    .word 0x2                # header version 0.2
    .word 0
    .dword 0
    .ascii "RISCV\0\0\0"
    .ascii "RSC\x05"
    .word 0
real_start:
    la t0, trap
    csrw stvec, t0
    li s10, 0
    li s11, 0
{body}
    j .

# Records scause/stval in s10/s11; resumes after the faulting instruction (2 or 4 bytes),
# or at ra for an instruction fetch fault. (rvc on while aligning: the pad may be a c.nop.)
    .option rvc
    .balign 4
    .option norvc
trap:
    csrr s10, scause
    csrr s11, stval
    li s9, 1
    beq s10, s9, 1f
    csrr s9, sepc
    lhu s8, 0(s9)
    andi s8, s8, 3
    addi s9, s9, 2
    li s7, 3
    bne s8, s7, 2f
    addi s9, s9, 2
2:  csrw sepc, s9
    sret
1:  csrw sepc, ra
    sret

# print_kv: a0 = NUL-terminated label, a1 = value; prints "label=hex\n" with DBCN write_byte.
print_kv:
    mv s2, a0
    mv s3, a1
1:  lbu a0, 0(s2)
    beqz a0, 2f
    li a7, 0x4442434E
    li a6, 2
    ecall
    addi s2, s2, 1
    j 1b
2:  li a0, '='
    li a7, 0x4442434E
    li a6, 2
    ecall
    li s4, 60
3:  srl a0, s3, s4
    andi a0, a0, 15
    addi a0, a0, '0'
    li s5, '9' + 1
    blt a0, s5, 4f
    addi a0, a0, 39
4:  li a7, 0x4442434E
    li a6, 2
    ecall
    addi s4, s4, -4
    bgez s4, 3b
    li a0, '\n'
    li a7, 0x4442434E
    li a6, 2
    ecall
    ret
"#
    );
    asm::assemble_at(&src, LOAD_ADDR)
}

struct Outcome {
    values: HashMap<String, u64>,
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

fn boot(name: &str, body: &str, cpus: u32) -> Outcome {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let image = dir.join(format!("exits-{name}-{}.img", std::process::id()));
    std::fs::write(&image, guest_image(body)).unwrap();
    let mut child = Command::new(common::duvisor_bin())
        .args([
            "run",
            "--memory",
            "64M",
            "--cpus",
            &cpus.to_string(),
            "--kernel",
        ])
        .arg(&image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run duvisor");
    // A guest that hangs fails the test instead of hanging it.
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let so_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut so, &mut v);
        v
    });
    let se_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut se, &mut v);
        v
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for duvisor") {
            break st;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break child.wait().expect("wait for duvisor");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = std::process::Output {
        status,
        stdout: so_t.join().unwrap(),
        stderr: se_t.join().unwrap(),
    };
    if std::env::var_os("KEEP_TEST_IMAGES").is_none() {
        let _ = std::fs::remove_file(&image);
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let values = stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            Some((k.to_string(), u64::from_str_radix(v, 16).ok()?))
        })
        .collect();
    Outcome {
        values,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

impl Outcome {
    fn get(&self, k: &str) -> u64 {
        *self
            .values
            .get(k)
            .unwrap_or_else(|| panic!("guest printed no {k}:\n{}\n{}", self.stdout, self.stderr))
    }
}

/// `label`, value register; the label string is emitted inline.
fn check(label: &str, reg: &str) -> String {
    format!(
        "    mv a1, {reg}\n    la a0, 9f\n    call print_kv\n    .pushsection .rodata\n9:  .asciz \"{label}\"\n    .popsection\n"
    )
}

fn sbi(eid: u64, fid: u64, args: &[u64]) -> String {
    let mut s = String::new();
    for (i, a) in args.iter().enumerate() {
        s += &format!("    li a{i}, {a:#x}\n");
    }
    s + &format!("    li a7, {eid:#x}\n    li a6, {fid}\n    ecall\n")
}

const SHUTDOWN: &str =
    "    li a0, 0\n    li a1, 0\n    li a7, 0x53525354\n    li a6, 0\n    ecall\n";
const NEG: fn(i64) -> u64 = |v| v as u64;

#[test]
fn sbi_calls_return_spec_results_and_errors() {
    let mut b = String::new();
    b += &sbi(0x10, 0, &[]);
    b += &check("SPEC", "a1");
    b += &sbi(0x10, 3, &[0x5449_4D45]);
    b += &check("PROBE_TIME", "a1");
    b += &sbi(0x10, 3, &[0x1234_5678]);
    b += &check("PROBE_BOGUS", "a1");
    b += &sbi(0x0A00_0000, 0, &[]);
    b += &check("UNKNOWN_EXT", "a0");
    b += &sbi(0x10, 99, &[]);
    b += &check("UNKNOWN_FID", "a0");
    b += &sbi(0x0073_5049, 0, &[1 << 5, 0]);
    b += &check("IPI_BAD_MASK", "a0");
    b += &sbi(0x0073_5049, 0, &[1, 0]);
    b += &check("IPI_SELF", "a0");
    b += "    csrr t0, sip\n    andi t0, t0, 2\n";
    b += &check("SSIP", "t0");
    b += "    csrci sip, 2\n    csrr t0, sip\n    andi t0, t0, 2\n";
    b += &check("SSIP_CLEARED", "t0");
    b += &sbi(0x0048_534D, 2, &[0]);
    b += &check("HSM_STATUS0_ERR", "a0");
    b += &check("HSM_STATUS0", "a1");
    b += &sbi(0x0048_534D, 2, &[1]);
    b += &check("HSM_STATUS1", "a1");
    b += &sbi(0x0048_534D, 2, &[7]);
    b += &check("HSM_STATUS7", "a0");
    b += &sbi(0x0048_534D, 0, &[0, LOAD_ADDR, 0]);
    b += &check("HSM_START_RUNNING", "a0");
    b += &sbi(0x0048_534D, 0, &[1, 0x1000, 0]);
    b += &check("HSM_START_BAD_ADDR", "a0");
    b += &sbi(0x5246_4E43, 0, &[u64::MAX, u64::MAX]);
    b += &check("RFENCE_I_ALL", "a0");
    b += &sbi(0x5352_5354, 0, &[7, 0]);
    b += &check("SRST_BAD_TYPE", "a0");
    // DBCN console_write of a string in guest RAM, and of an address outside RAM.
    b += "    la a1, 5f\n    li a0, 11\n    li a2, 0\n    li a7, 0x4442434E\n    li a6, 0\n    ecall\n    .pushsection .rodata\n5:  .ascii \"hello-dbcn\\n\"\n    .popsection\n";
    b += &check("DBCN_WRITTEN", "a1");
    b += &sbi(0x4442_434E, 0, &[16, 0x2000_0000, 0]);
    b += &check("DBCN_BAD_ADDR", "a0");
    // base_hi holds address bits above 64 on RV64: any nonzero value is out of range.
    b += &sbi(0x4442_434E, 0, &[4, LOAD_ADDR, 1]);
    b += &check("DBCN_HI_SET", "a0");
    b += SHUTDOWN;
    let o = boot("sbi", &b, 2);
    assert_eq!(o.code, Some(0), "shutdown should exit 0: {}", o.stderr);
    assert_eq!(o.get("SPEC"), 2 << 24);
    assert_eq!(o.get("PROBE_TIME"), 1);
    assert_eq!(o.get("PROBE_BOGUS"), 0);
    assert_eq!(o.get("UNKNOWN_EXT"), NEG(-2), "SBI_ERR_NOT_SUPPORTED");
    assert_eq!(o.get("UNKNOWN_FID"), NEG(-2));
    assert_eq!(o.get("IPI_BAD_MASK"), NEG(-3), "SBI_ERR_INVALID_PARAM");
    assert_eq!(o.get("IPI_SELF"), 0);
    assert_eq!(o.get("SSIP"), 2, "a self-IPI sets SSIP");
    assert_eq!(o.get("SSIP_CLEARED"), 0);
    assert_eq!(o.get("HSM_STATUS0_ERR"), 0);
    assert_eq!(o.get("HSM_STATUS0"), 0, "hart 0 is started");
    assert_eq!(o.get("HSM_STATUS1"), 1, "hart 1 is stopped");
    assert_eq!(o.get("HSM_STATUS7"), NEG(-3));
    assert_eq!(
        o.get("HSM_START_RUNNING"),
        NEG(-6),
        "SBI_ERR_ALREADY_AVAILABLE"
    );
    assert_eq!(
        o.get("HSM_START_BAD_ADDR"),
        NEG(-5),
        "SBI_ERR_INVALID_ADDRESS"
    );
    assert_eq!(o.get("RFENCE_I_ALL"), 0);
    assert_eq!(o.get("SRST_BAD_TYPE"), NEG(-3));
    assert!(o.stdout.contains("hello-dbcn\n"), "{}", o.stdout);
    assert_eq!(o.get("DBCN_WRITTEN"), 11);
    assert_eq!(o.get("DBCN_BAD_ADDR"), NEG(-3));
    assert_eq!(o.get("DBCN_HI_SET"), NEG(-3));
}

#[test]
fn mmio_accesses_are_emulated_and_holes_fault() {
    let mut b = String::new();
    // UART line status: THR empty and transmitter empty.
    b += "    li t1, 0x10000005\n    lbu t0, 0(t1)\n";
    b += &check("LSR", "t0");
    // PLIC priority of source 10: word write, word read back, compressed read back.
    b += "    li a1, 0x0c000028\n    li t0, 5\n    sw t0, 0(a1)\n    lw t2, 0(a1)\n";
    b += &check("PLIC_PRIO", "t2");
    b += "    li a1, 0x0c000028\n    .option rvc\n    c.lw a2, 0(a1)\n    .option norvc\n";
    b += &check("PLIC_PRIO_C", "a2");
    // Load, store and fetch at holes in the guest-physical map.
    b += "    li t1, 0x20000000\n    ld t0, 0(t1)\n";
    b += &check("HOLE_LOAD_CAUSE", "s10");
    b += &check("HOLE_LOAD_TVAL", "s11");
    b += "    li s10, 0\n    li t1, 0x20000008\n    sd t0, 0(t1)\n";
    b += &check("HOLE_STORE_CAUSE", "s10");
    b += "    li s10, 0\n    li t1, 0x84000000\n    lw t0, 0(t1)\n";
    b += &check("ABOVE_RAM_CAUSE", "s10");
    b += "    li s10, 0\n    li t1, 0x10000000\n    jalr ra, 0(t1)\n";
    b += &check("FETCH_MMIO_CAUSE", "s10");
    // A misaligned MMIO access is refused with an access fault, not emulated.
    b += "    li s10, 0\n    li t1, 0x0c000029\n    lw t0, 0(t1)\n";
    b += &check("MISALIGNED_MMIO_CAUSE", "s10");
    b += SHUTDOWN;
    let o = boot("mmio", &b, 1);
    assert_eq!(
        o.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(o.get("LSR"), 0x60);
    assert_eq!(o.get("PLIC_PRIO"), 5);
    assert_eq!(o.get("PLIC_PRIO_C"), 5);
    assert_eq!(o.get("HOLE_LOAD_CAUSE"), 5, "load access fault");
    assert_eq!(o.get("HOLE_LOAD_TVAL"), 0x2000_0000);
    assert_eq!(o.get("HOLE_STORE_CAUSE"), 7, "store access fault");
    assert_eq!(o.get("ABOVE_RAM_CAUSE"), 5);
    assert_eq!(o.get("FETCH_MMIO_CAUSE"), 1, "instruction access fault");
    assert_eq!(o.get("MISALIGNED_MMIO_CAUSE"), 5);
}

#[test]
fn guest_reset_ends_the_vm_with_nonzero_status_and_reason() {
    let b = "    li a0, 1\n    li a1, 1\n    li a7, 0x53525354\n    li a6, 0\n    ecall\n";
    let o = boot("reset", b, 1);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    let lines: Vec<_> = o.stderr.lines().collect();
    assert_eq!(
        lines,
        ["duvisor: guest requested a cold reset (reason system failure)"]
    );
}

#[test]
fn secondary_hart_starts_through_hsm_and_runs() {
    // Hart 0 starts hart 1 at `second` with opaque 0x1234; hart 1 reports a0/a1 and shuts the
    // VM down.
    let b = r#"
    la a1, second
    li a0, 1
    li a2, 0x1234
    li a7, 0x48534D
    li a6, 0
    ecall
    mv s7, a0
1:  j 1b
second:
    mv s6, a0
    mv s8, a1
"#
    .to_string()
        + &check("HART1_A0", "s6")
        + &check("HART1_OPAQUE", "s8")
        + &sbi(0x0048_534D, 2, &[1])
        + &check("HART1_STATUS", "a1")
        + SHUTDOWN;
    let o = boot("hsm", &b, 2);
    assert_eq!(
        o.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(o.get("HART1_A0"), 1);
    assert_eq!(o.get("HART1_OPAQUE"), 0x1234);
    assert_eq!(o.get("HART1_STATUS"), 0);
}
