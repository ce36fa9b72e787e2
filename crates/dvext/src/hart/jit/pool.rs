//! One compiler thread per VM, and the regions it compiled, shared by the VM's harts.
//!
//! The vCPUs of a VM run the same kernel and mostly the same programs, so a region one hart
//! compiled is what the others need too: they copy its code into their own code space instead
//! of compiling it again (a Linux boot on 4 vCPUs compiled each region up to four times, and
//! the compilers took more host CPU than the vCPUs). Code is shared by the entry's physical
//! address and the page's code generation, and a hart installs shared code only if every
//! instruction of the region still matches memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::region::Region;
use super::{Compiler, Finished, JobTag};

/// Compilations that may wait for the compiler thread at once (all harts together).
const QUEUE: usize = 16;
/// Nice value of the compiler thread. When vCPUs outnumber host cores (4 vCPUs on 2), a
/// compiler at the vCPUs' priority took their CPU while they had guest code to run, and much
/// of what it compiled then was code they had already interpreted past. Behind them it still
/// runs on an idle core at full speed, and when it has stalled a vCPU that waits too long for
/// a region compiles it itself (`INLINE_AFTER`). Bench medians of 12 interleaved runs on a
/// 2-core host, nice 0 -> 10: smp 0.79 -> 0.69 s, boot4 3.01 -> 2.80 s (of 6: cpu 1.29 ->
/// 1.23 s, blkrd 0.135 -> 0.13 s).
const COMPILER_NICE: libc::c_int = 10;
/// How long the compiler thread may go without taking or finishing a job before it counts as
/// stalled: several times a typical compilation (0.3-0.5 ms). Only then does a vCPU compile a
/// block that has waited too long itself (see [`JitPool::stalled`]).
const DEFAULT_PATIENCE: Duration = Duration::from_millis(4);
/// Bytes of host code the shared table keeps; past that it starts over (harts keep the code
/// they installed: this only bounds what is kept for harts that have not asked yet).
const TABLE_BYTES: usize = 4 << 20;

/// A region to compile for one hart, which gets the result through `reply`.
pub(crate) struct Job {
    pub tag: JobTag,
    pub region: Arc<Region>,
    pub reply: Sender<Finished>,
}

/// A compiled region: its code page's generation when it was decoded, and its host code.
pub(crate) struct SharedCode {
    pub gen: u32,
    pub region: Arc<Region>,
    pub code: Arc<[u8]>,
}

#[derive(Default)]
struct Table {
    by_hpa: HashMap<u64, Arc<SharedCode>>,
    bytes: usize,
}

impl Table {
    fn get(&self, hpa: u64, gen: u32) -> Option<Arc<SharedCode>> {
        self.by_hpa.get(&hpa).filter(|s| s.gen == gen).cloned()
    }

    fn put(&mut self, hpa: u64, s: Arc<SharedCode>) {
        if self.bytes + s.code.len() > TABLE_BYTES {
            self.by_hpa.clear();
            self.bytes = 0;
        }
        self.bytes += s.code.len();
        if let Some(old) = self.by_hpa.insert(hpa, s) {
            self.bytes -= old.code.len();
        }
    }
}

/// When the compiler thread last took or finished a job.
struct Progress {
    start: Instant,
    /// Nanoseconds since `start`.
    last: AtomicU64,
    /// Nanoseconds without either after which it counts as stalled.
    patience: u64,
}

impl Progress {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn mark(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    fn stalled(&self) -> bool {
        self.now().saturating_sub(self.last.load(Ordering::Relaxed)) >= self.patience
    }
}

struct Inner {
    /// The VM's harts running guest code now (in `huret`, not asleep in WFI), and the host
    /// cores there are to run them (see [`JitPool::cores_taken`]).
    running: AtomicU32,
    host_cores: u32,
    table: Arc<Mutex<Table>>,
    progress: Arc<Progress>,
    /// The only sender (harts queue through the pool, which they hold): taken on drop, which
    /// ends the thread.
    jobs: Option<SyncSender<Job>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self
            .thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = t.join();
        }
    }
}

/// The compiling tier's compiler thread and shared code for the harts of one VM (pass it to
/// [`crate::Hart::enable_jit`] for each).
#[derive(Clone)]
pub struct JitPool(Arc<Inner>);

impl std::fmt::Debug for JitPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitPool").finish_non_exhaustive()
    }
}

/// How a [`JitPool`] shares the host with its vCPUs.
#[derive(Clone, Copy, Debug)]
pub struct JitPoolSettings {
    /// How long the compiler thread may go without taking or finishing a job while its queue
    /// is full before harts compile waiting regions themselves (see [`JitPool::stalled`]).
    pub patience: Duration,
    /// Host cores the VM's threads run on (see [`JitPool::cores_taken`]).
    pub host_cores: u32,
    /// Called on the compiler thread before each job: the VM plane narrows the thread's
    /// system calls there (its sandbox is installed after the thread starts).
    pub before_job: Option<fn()>,
}

impl Default for JitPoolSettings {
    /// The host's cores as the process may use them, read now (the VM plane's sandbox,
    /// installed later, may not allow it).
    fn default() -> Self {
        JitPoolSettings {
            patience: DEFAULT_PATIENCE,
            host_cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            before_job: None,
        }
    }
}

impl JitPool {
    /// Start the compiler thread (named `name`). Call it before the process forbids new
    /// threads.
    pub fn new(name: &str) -> Result<JitPool, String> {
        JitPool::with_settings(name, JitPoolSettings::default())
    }

    /// [`JitPool::new`] with `settings` instead of the defaults.
    pub fn with_settings(name: &str, settings: JitPoolSettings) -> Result<JitPool, String> {
        let patience = settings.patience;
        let mut compiler = Compiler::new()?;
        let table = Arc::new(Mutex::new(Table::default()));
        let (jobs, rx) = sync_channel::<Job>(QUEUE);
        let t = Arc::clone(&table);
        let progress = Arc::new(Progress {
            start: Instant::now(),
            last: AtomicU64::new(0),
            patience: patience.as_nanos().try_into().unwrap_or(u64::MAX),
        });
        let p = Arc::clone(&progress);
        let (started, start) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                lower_priority();
                let _ = started.send(());
                for job in rx {
                    if let Some(f) = settings.before_job {
                        f();
                    }
                    p.mark();
                    let done = compile(&mut compiler, &t, job.tag, job.region);
                    p.mark();
                    // A hart that has gone away no longer needs it.
                    let _ = job.reply.send(done);
                }
            })
            .map_err(|e| format!("starting the compiler thread: {e}"))?;
        // Its priority is set before this returns: the VM plane's sandbox, installed after
        // set-up, does not allow the call.
        start
            .recv()
            .map_err(|_| "the compiler thread ended while starting".to_string())?;
        Ok(JitPool(Arc::new(Inner {
            running: AtomicU32::new(0),
            host_cores: settings.host_cores.max(1),
            table,
            progress,
            jobs: Some(jobs),
            thread: Mutex::new(Some(thread)),
        })))
    }

    /// A hart of the VM starts (`true`) or stops (`false`) running guest code: it enters or
    /// leaves `huret`, or wakes from or goes to sleep in WFI.
    pub(crate) fn hart_running(&self, running: bool) {
        if running {
            self.0.running.fetch_add(1, Ordering::Relaxed);
        } else {
            self.0.running.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether the VM's running harts take every host core. The compiler thread then gets
    /// the CPU only as far as its priority lets it (`COMPILER_NICE`), and a queued region
    /// comes late: its hart, and the others that run the same code, interpret meanwhile. So
    /// a hart compiles a region itself instead, at once; with a core to spare, the thread
    /// does it for free. The bench's smp row (4 jobs on 4 vCPUs, 2 host cores), medians of 8
    /// interleaved runs: 0.552 s queueing always, 0.534 s never, 0.527 s by this rule; a
    /// 4-vCPU boot to the shell took 2.00 s, 2.19 s and 2.03 s (it sleeps in WFI often).
    pub(crate) fn cores_taken(&self) -> bool {
        self.0.running.load(Ordering::Relaxed) >= self.0.host_cores
    }

    /// Queue `job`; false if the queue is full.
    pub(crate) fn try_send(&self, job: Job) -> bool {
        self.0
            .jobs
            .as_ref()
            .is_some_and(|j| j.try_send(job).is_ok())
    }

    /// Whether the compiler thread has neither taken nor finished a job for its patience.
    /// Asked when the queue is full, so the thread is not getting the CPU (vCPUs outnumber
    /// host cores and it runs behind them, or the host is busy), and a hart with a block that
    /// waits too long compiles it itself. When the thread has a core, a vCPU stopping to
    /// compile only delays the guest: with 1 vCPU on 2 host cores, `dd` of 128 MiB with
    /// O_DIRECT just after boot took 0.118 s (medians of 6) when vCPUs compiled after waiting
    /// regardless, 0.111 s when they never did.
    pub(crate) fn stalled(&self) -> bool {
        self.0.progress.stalled()
    }

    /// Code for the region entered at `hpa` in a page of generation `gen`, if a hart has
    /// compiled one.
    pub(crate) fn lookup(&self, hpa: u64, gen: u32) -> Option<Arc<SharedCode>> {
        lock(&self.0.table).get(hpa, gen)
    }

    /// Offer code a hart compiled itself to the others.
    pub(crate) fn offer(&self, hpa: u64, s: Arc<SharedCode>) {
        lock(&self.0.table).put(hpa, s);
    }
}

/// Give the calling thread [`COMPILER_NICE`] (on Linux `PRIO_PROCESS` with `who` 0 is the
/// calling thread, not the whole process). Raising one's own nice value is always allowed; if
/// it failed anyway the thread would only compete with the vCPUs as before.
fn lower_priority() {
    // SAFETY: setpriority takes no pointers and changes only the calling thread's nice value.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, COMPILER_NICE) };
}

fn lock(t: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

/// One job on the compiler thread: the shared code if another hart's job has produced it
/// meanwhile, else a compilation (offered to the other harts).
fn compile(c: &mut Compiler, table: &Mutex<Table>, tag: JobTag, region: Arc<Region>) -> Finished {
    if let Some(s) = lock(table).get(tag.hpa, tag.gen) {
        return Finished {
            tag,
            region: Arc::clone(&s.region),
            code: Some(Arc::clone(&s.code)),
            ns: 0,
            shared: true,
        };
    }
    let t = Instant::now();
    let code: Option<Arc<[u8]>> = c.compile(&region, tag.gen).map(Arc::from);
    let ns = t.elapsed().as_nanos() as u64;
    if let Some(code) = &code {
        let s = SharedCode {
            gen: tag.gen,
            region: Arc::clone(&region),
            code: Arc::clone(code),
        };
        lock(table).put(tag.hpa, Arc::new(s));
    }
    Finished {
        tag,
        region,
        code,
        ns,
        shared: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hart::jit::region::Part;

    fn shared(gen: u32, len: usize) -> Arc<SharedCode> {
        Arc::new(SharedCode {
            gen,
            region: Arc::new(Region {
                parts: vec![Part {
                    delta: 0,
                    insts: Box::new([]),
                }],
            }),
            code: vec![0xcc; len].into(),
        })
    }

    #[test]
    fn a_compiler_thread_is_stalled_after_its_patience_without_progress() {
        let patience = Duration::from_millis(50);
        let p = Progress {
            start: Instant::now().checked_sub(patience * 2).unwrap(),
            last: AtomicU64::new(0),
            patience: patience.as_nanos() as u64,
        };
        assert!(
            p.stalled(),
            "nothing taken or finished for twice its patience"
        );
        p.mark();
        assert!(!p.stalled(), "it has just taken a job");
    }

    #[test]
    fn table_matches_generation_and_stays_bounded() {
        let mut t = Table::default();
        t.put(0x1000, shared(3, 100));
        assert!(t.get(0x1000, 3).is_some());
        assert!(t.get(0x1000, 4).is_none(), "another generation of the page");
        assert!(t.get(0x2000, 3).is_none());
        t.put(0x1000, shared(4, 300));
        assert_eq!(t.bytes, 300, "a replaced entry's bytes are given back");
        t.put(0x2000, shared(1, TABLE_BYTES - 300));
        assert_eq!(t.bytes, TABLE_BYTES);
        t.put(0x3000, shared(1, 1));
        assert_eq!(t.bytes, 1, "full: starts over");
        assert!(t.get(0x1000, 4).is_none() && t.get(0x3000, 1).is_some());
    }
}
