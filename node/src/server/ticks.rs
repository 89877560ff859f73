//! A core's logical clock: one Raft tick per `tick_ms` of wall-clock time.
//!
//! The core loop takes a tick itself after every wake-up when one is due
//! ([`TickClock::take_due`]), and a timer task ([`TickClock::spawn_timer`]) wakes the loop
//! with an [`Event::Tick`] at the deadline when nothing else does.
//!
//! Why not the timer alone: glommio fires timers only in its I/O poll, and an executor whose
//! tasks are always runnable (a core under more load than it can take) reaches that poll only
//! when its preemption timer fires, every 500 ms (`tessera_wal::executor`). On such a core a
//! timer-driven tick of 100 ms would come up to five times late: the Regions' heartbeats would
//! stall and their followers would start elections. The loop runs on every event, so its own
//! look at the clock keeps the ticks on time whatever the executor does.
//!
//! A late tick is taken once, and the next one is due a whole interval after it: the logical
//! clock may run slow, never fast, so a core that was held up does not burst into elections
//! the moment it runs again.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{Event, Inbox};

/// When the next tick is due; shared by the core loop and its timer task (one executor).
#[derive(Clone)]
pub struct TickClock {
    interval: Duration,
    deadline: Rc<Cell<Instant>>,
}

impl TickClock {
    /// A clock whose first tick is due one `interval` after `now`.
    pub fn new(interval: Duration, now: Instant) -> TickClock {
        TickClock {
            interval,
            deadline: Rc::new(Cell::new(now + interval)),
        }
    }

    /// Whether a tick is due at `now`; if so it is taken, and the next is due one interval
    /// after `now`.
    pub fn take_due(&self, now: Instant) -> bool {
        if now < self.deadline.get() {
            return false;
        }
        self.deadline.set(now + self.interval);
        true
    }

    /// When the next tick is due.
    pub fn deadline(&self) -> Instant {
        self.deadline.get()
    }

    /// Spawns the task that sends the core loop an [`Event::Tick`] at each deadline the loop
    /// has not reached by itself, so an idle core keeps ticking. On shutdown it sends one last
    /// tick, which wakes the loop so it can stop.
    pub fn spawn_timer(&self, inbox: Inbox, shutdown: Arc<AtomicBool>) {
        let clock = self.clone();
        glommio::spawn_local(async move {
            loop {
                if shutdown.load(Ordering::Relaxed) {
                    let _ = inbox.try_send(Event::Tick);
                    return;
                }
                let now = Instant::now();
                let deadline = clock.deadline();
                if deadline > now {
                    glommio::timer::sleep(deadline - now).await;
                    continue;
                }
                let _ = inbox.try_send(Event::Tick);
                // The loop moves the deadline when it takes the tick; look again an interval
                // later (at once if it has not taken it by then).
                glommio::timer::sleep(clock.interval).await;
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_tick_is_due_at_its_deadline_and_not_before() {
        let start = Instant::now();
        let clock = TickClock::new(100 * MS, start);
        assert!(!clock.take_due(start));
        assert!(!clock.take_due(start + 99 * MS));
        assert!(clock.take_due(start + 100 * MS));
        assert_eq!(clock.deadline(), start + 200 * MS);
        assert!(
            !clock.take_due(start + 100 * MS),
            "the same moment ticks once"
        );
        assert!(!clock.take_due(start + 199 * MS));
        assert!(clock.take_due(start + 200 * MS));
    }

    #[test]
    fn a_late_tick_is_taken_once_and_the_next_is_a_whole_interval_later() {
        let start = Instant::now();
        let clock = TickClock::new(100 * MS, start);
        // Held up for more than five intervals: one tick, not six.
        assert!(clock.take_due(start + 650 * MS));
        assert!(!clock.take_due(start + 650 * MS));
        assert!(!clock.take_due(start + 749 * MS));
        assert!(clock.take_due(start + 750 * MS));
    }

    #[test]
    fn the_timer_and_the_loop_share_one_deadline() {
        let start = Instant::now();
        let clock = TickClock::new(100 * MS, start);
        let timer_view = clock.clone();
        assert!(clock.take_due(start + 120 * MS));
        assert_eq!(timer_view.deadline(), start + 220 * MS);
        assert!(!timer_view.take_due(start + 150 * MS));
    }

    /// The reason for the clock: on an executor whose tasks are always runnable, glommio's
    /// timer fires only at the preemption timer, while the loop's own look at the clock
    /// ticks on time. A busy task stands in for a core loop that always has events.
    #[test]
    fn on_an_executor_that_never_idles_the_loop_ticks_on_time_and_the_timer_does_not() {
        let executor = tessera_wal::executor::build_executor(
            "ticks-test",
            glommio::Placement::Unbound,
            tessera_wal::executor::IO_MEMORY_BYTES_DEFAULT,
        )
        .expect("an executor");
        let (loop_ticks, timer_ticks, elapsed) = executor.run(async {
            let (inbox, events) = super::super::core::inbox();
            let interval = 20 * MS;
            let clock = TickClock::new(interval, Instant::now());
            // The timer alone, as the loop's ticks were before: its own clock, never taken by
            // the loop.
            let timer_only = TickClock::new(interval, Instant::now());
            timer_only.spawn_timer(inbox.clone(), Arc::new(AtomicBool::new(false)));
            let started = Instant::now();
            let (mut loop_ticks, mut timer_ticks) = (0u32, 0u32);
            // 25 intervals take 0.5 s; the deadline only bounds a starved test thread.
            while loop_ticks < 25 && started.elapsed() < 20_000 * MS {
                while let Some(Some(Event::Tick)) =
                    futures_lite::future::poll_once(events.recv()).await
                {
                    timer_ticks += 1;
                    timer_only.take_due(Instant::now());
                }
                if clock.take_due(Instant::now()) {
                    loop_ticks += 1;
                }
                // Runnable again at once: the executor never runs out of work.
                futures_lite::future::yield_now().await;
            }
            (loop_ticks, timer_ticks, started.elapsed())
        });
        assert_eq!(
            loop_ticks, 25,
            "the loop's clock ticked {loop_ticks} times in {elapsed:?}"
        );
        // glommio polls its timers at the 500 ms preemption timer here: about two a second.
        let timer_bound = 2 * elapsed.as_secs() as u32 + 3;
        assert!(
            timer_ticks <= timer_bound,
            "the timer ticked {timer_ticks} times in {elapsed:?} on a busy executor; if glommio \
             now polls timers while tasks are runnable, the loop's clock is no longer needed"
        );
    }
}
