//! Bounds on one request's guest, the same in `serve` and `spin` mode: guest
//! time (wasmtime's epoch interruption) and linear memory (a store limiter).
//! A guest that hits either is stopped and its request answered 503; the
//! instance is thrown away, as every instance is after its request.

use std::time::Duration;

use wasmtime::{Config, Engine, ResourceLimiter, Store, UpdateDeadline};

/// The epoch tick. Guest time is counted in ticks during which the guest was
/// running: a tick spent waiting on the host (an upstream, a body) is not
/// counted, except that a wait which spans a tick boundary may be charged one.
const TICK: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug)]
pub struct GuestLimits {
    /// Guest time per request.
    pub cpu: Duration,
    /// Linear memory per instance, in bytes.
    pub memory: usize,
}

/// Which bound stopped a guest; the error a trap carries, so that the
/// server can tell it from a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    Cpu,
    Memory,
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitHit::Cpu => "the request's guest time limit was reached",
            LimitHit::Memory => "the request's guest memory limit was reached",
        })
    }
}

impl std::error::Error for LimitHit {}

impl LimitHit {
    /// The bound a guest failure was caused by, if it was one.
    pub fn of(error: &anyhow::Error) -> Option<LimitHit> {
        error.chain().find_map(|cause| cause.downcast_ref::<LimitHit>().copied())
    }

    /// The error code of the 503 a client gets: it names the bound, never the guest's state.
    pub fn code(self) -> &'static str {
        match self {
            LimitHit::Cpu => "guest_time_exceeded",
            LimitHit::Memory => "guest_memory_exceeded",
        }
    }
}

impl GuestLimits {
    /// Turns on epoch interruption in an engine's configuration.
    pub fn configure(config: &mut Config) {
        config.epoch_interruption(true);
    }

    /// Starts the thread that ticks the engine's epoch.
    pub fn start_ticker(engine: &Engine) {
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("edgeproxy-epoch".into())
            .spawn(move || {
                // Ends with the engine.
                loop {
                    std::thread::sleep(TICK);
                    let Some(engine) = weak.upgrade() else { break };
                    engine.increment_epoch();
                }
            })
            .expect("spawn the epoch thread");
    }

    /// Arms a fresh store: its guest may run `cpu` and grow to `memory`. A
    /// running guest yields to the executor every tick, so a loop shares its
    /// thread with other requests until it is stopped.
    pub fn arm<T: Send + 'static>(&self, store: &mut Store<T>, memory: impl (FnMut(&mut T) -> &mut dyn ResourceLimiter) + Send + Sync + 'static) {
        let budget = (self.cpu.as_millis() / TICK.as_millis()).max(1) as u64;
        let mut spent = 0u64;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            spent += 1;
            // tokio's yield_now, not a plain yield: it lets the runtime poll
            // its sockets before the guest runs on, so a loop on a serving
            // thread does not starve that thread's other connections' I/O.
            if spent >= budget { Err(LimitHit::Cpu.into()) } else { Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))) }
        });
        store.limiter(memory);
    }

    pub fn memory_cap(&self) -> MemoryCap {
        MemoryCap { max: self.memory }
    }
}

/// The store limiter: a memory may not grow past `max`. Growing past it is a
/// trap rather than a failed `memory.grow`, so the request ends at once with
/// a cause the server can name.
pub struct MemoryCap {
    max: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max { Err(LimitHit::Memory.into()) } else { Ok(true) }
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }
}
