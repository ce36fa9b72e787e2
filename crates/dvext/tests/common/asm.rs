//! Assembling small RISC-V guest programs with Debian's riscv64 binutils (installed by
//! scripts/install-deps.sh). Shared by the dvext and duvisor test suites.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

const AS: &str = "riscv64-linux-gnu-as";
const LD: &str = "riscv64-linux-gnu-ld";
const OBJCOPY: &str = "riscv64-linux-gnu-objcopy";
const MARCH: &str = "rv64gc_zicsr_zifencei";

fn tool(name: &str, args: &[&str]) {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `{name}` ({e}): install binutils-riscv64-linux-gnu")
    });
    assert!(
        out.status.success(),
        "`{name} {}` failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scratch_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "asm-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// Assemble `src` (GNU as syntax, rv64gc: compressed where possible unless the source says
/// `.option norvc`), link it at `addr` and return the flat binary.
pub fn assemble_at(src: &str, addr: u64) -> Vec<u8> {
    let dir = scratch_dir();
    let s = dir.join("prog.S");
    let o = dir.join("prog.o");
    let elf = dir.join("prog.elf");
    let bin = dir.join("prog.bin");
    // norelax: labels resolve at assembly time, so .balign works without linker relaxation.
    std::fs::write(&s, format!(".option norelax\n.text\n{src}\n")).expect("write source");
    let p = |p: &PathBuf| p.to_str().expect("utf-8 path").to_owned();
    tool(AS, &[&format!("-march={MARCH}"), "-o", &p(&o), &p(&s)]);
    let text = format!("-Ttext={addr:#x}");
    let entry = format!("{addr:#x}");
    // -N: text and data contiguous; --no-relax: no gp-relative rewrites (gp is never set).
    tool(
        LD,
        &[
            "-N",
            "--no-relax",
            &text,
            "-e",
            &entry,
            "-o",
            &p(&elf),
            &p(&o),
        ],
    );
    tool(OBJCOPY, &["-O", "binary", &p(&elf), &p(&bin)]);
    let bytes = std::fs::read(&bin).expect("read binary");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!bytes.is_empty(), "assembled program is empty");
    bytes
}
