//! When requests are meant to go out, and what their latency is.
//!
//! Sans-I/O: time is a plain `u64` of nanoseconds since the run started, so the driver and the
//! tests share the same logic and the tests need no clock.
//!
//! - Closed loop: a request is due whenever the connection has a free in-flight slot; its
//!   intended send time is the moment it is sent.
//! - Open loop at a fixed rate: request `k` of connection `c` (of `C`) is intended at
//!   `c / rate + k * C / rate`, so all connections together send evenly spaced requests. When
//!   the in-flight window is full (the server is slow or stalled) requests go out late, and
//!   their latency is still measured from the intended time. A stall therefore shows up as
//!   latency for every request it delayed instead of as one slow request followed by a gap in
//!   the schedule (coordinated omission).

/// One connection's schedule.
#[derive(Clone, Debug)]
pub struct Pacer {
    interval_ns: Option<u64>,
    first_ns: u64,
    stop_ns: u64,
    requests_max: Option<u64>,
    issued: u64,
}

impl Pacer {
    /// As fast as the window allows, from now until `stop_ns` or `requests_max` requests.
    pub fn closed_loop(stop_ns: u64, requests_max: Option<u64>) -> Pacer {
        Pacer {
            interval_ns: None,
            first_ns: 0,
            stop_ns,
            requests_max,
            issued: 0,
        }
    }

    /// Connection `index` of `connections` sharing `rate_per_second` requests/s: its first
    /// request is intended at `start_ns + index / rate`, then one every `connections / rate`.
    ///
    /// # Panics
    /// If the rate is not positive or `index >= connections`.
    pub fn open_loop(
        rate_per_second: f64,
        connections: usize,
        index: usize,
        start_ns: u64,
        stop_ns: u64,
        requests_max: Option<u64>,
    ) -> Pacer {
        assert!(rate_per_second > 0.0, "open-loop rate {rate_per_second}");
        assert!(index < connections, "connection {index} of {connections}");
        let spacing_ns = 1e9 / rate_per_second;
        Pacer {
            interval_ns: Some(((spacing_ns * connections as f64).round() as u64).max(1)),
            first_ns: start_ns + (spacing_ns * index as f64).round() as u64,
            stop_ns,
            requests_max,
            issued: 0,
        }
    }

    /// The intended send time of the next request if it is due at `now_ns`, counting it as
    /// issued; `None` when nothing is due yet or the schedule is over.
    pub fn take_due(&mut self, now_ns: u64) -> Option<u64> {
        if self.is_over(now_ns) {
            return None;
        }
        let intended_ns = match self.interval_ns {
            None => now_ns,
            Some(interval) => self.first_ns + self.issued * interval,
        };
        if intended_ns > now_ns {
            return None;
        }
        self.issued += 1;
        Some(intended_ns)
    }

    /// When the next request falls due (open loop); `None` in closed loop, where a request is
    /// due as soon as a slot frees, or when the schedule is over.
    pub fn next_due_ns(&self) -> Option<u64> {
        let interval = self.interval_ns?;
        let next = self.first_ns + self.issued * interval;
        (!self.is_over(next)).then_some(next)
    }

    /// No request will be due at or after `now_ns`.
    pub fn is_over(&self, now_ns: u64) -> bool {
        if self.requests_max.is_some_and(|max| self.issued >= max) {
            return true;
        }
        match self.interval_ns {
            None => now_ns >= self.stop_ns,
            Some(interval) => self.first_ns + self.issued * interval >= self.stop_ns,
        }
    }
}

/// A request's latency: from its intended send time to its completion.
pub fn latency_ns(intended_ns: u64, completed_ns: u64) -> u64 {
    completed_ns.saturating_sub(intended_ns)
}

/// Operations per second over `elapsed_ns`; 0 for an empty interval.
pub fn per_second(count: u64, elapsed_ns: u64) -> f64 {
    if elapsed_ns == 0 {
        0.0
    } else {
        count as f64 * 1e9 / elapsed_ns as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;

    /// Drives one connection against a model server without a clock: `serve(send_ns)` gives a
    /// request's completion time. Returns `(intended_ns, latency_ns)` per request, in order.
    fn simulate(
        mut pacer: Pacer,
        window: usize,
        mut serve: impl FnMut(u64) -> u64,
    ) -> Vec<(u64, u64)> {
        let mut now = 0;
        let mut in_flight: Vec<(u64, u64)> = Vec::new();
        let mut done = Vec::new();
        loop {
            while in_flight.len() < window {
                let Some(intended) = pacer.take_due(now) else {
                    break;
                };
                in_flight.push((intended, serve(now)));
            }
            if in_flight.is_empty() && pacer.is_over(now) {
                return done;
            }
            // Jump to the next event: a completion, or the next request falling due.
            let next_completion = in_flight.iter().map(|(_, c)| *c).min();
            let next_due = (in_flight.len() < window)
                .then(|| pacer.next_due_ns())
                .flatten();
            now = [next_completion, next_due]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
            in_flight.retain(|&(intended, completed)| {
                if completed <= now {
                    done.push((intended, latency_ns(intended, completed)));
                }
                completed > now
            });
        }
    }

    /// A FIFO server taking `service_ns` per request that does nothing in
    /// `[stall_from_ns, stall_until_ns)`.
    fn stalling_server(
        service_ns: u64,
        stall_from_ns: u64,
        stall_until_ns: u64,
    ) -> impl FnMut(u64) -> u64 {
        let mut free_at = 0;
        move |send_ns| {
            let mut start = send_ns.max(free_at);
            if (stall_from_ns..stall_until_ns).contains(&start) {
                start = stall_until_ns;
            }
            free_at = start + service_ns;
            free_at
        }
    }

    #[test]
    fn open_loop_records_a_stall_as_latency_for_every_request_it_delayed() {
        // 1,000 requests/s for one second, one in flight, 100 µs service, a 100 ms stall.
        let pacer = Pacer::open_loop(1000.0, 1, 0, 0, 1000 * MS, None);
        let results = simulate(pacer, 1, stalling_server(100 * US, 200 * MS, 300 * MS));
        assert_eq!(
            results.len(),
            1000,
            "every scheduled request is sent and measured"
        );
        for &(intended, latency) in &results {
            if intended < 200 * MS {
                assert_eq!(latency, 100 * US, "before the stall: service time only");
            } else if intended < 300 * MS {
                // Held until the stall ends, then sent from the backlog one after another:
                // latency counts from the intended time, not from when it finally went out.
                assert!(
                    latency >= 300 * MS - intended,
                    "intended {intended}: {latency}"
                );
            }
        }
        let delayed = results.iter().filter(|(_, l)| *l > 100 * US).count();
        assert!((100..=115).contains(&delayed), "{delayed} requests delayed");
        let worst = results.iter().map(|(_, l)| *l).max().unwrap();
        assert_eq!(worst, 100 * MS + 100 * US);
    }

    #[test]
    fn closed_loop_hides_the_same_stall_in_one_sample() {
        // The coordinated-omission contrast: the generator waits with the server, so only the
        // request caught by the stall is slow, and it sends fewer requests instead.
        let pacer = Pacer::closed_loop(1000 * MS, None);
        let results = simulate(pacer, 1, stalling_server(100 * US, 200 * MS, 300 * MS));
        let slow = results.iter().filter(|(_, l)| *l > 100 * US).count();
        assert_eq!(slow, 1);
        assert_eq!(results.len(), 9000, "900 ms of 100 µs requests");
    }

    #[test]
    fn open_loop_connections_interleave_into_an_even_global_schedule() {
        let rate = 10_000.0;
        let connections = 4;
        let mut intended: Vec<u64> = Vec::new();
        for index in 0..connections {
            let mut pacer = Pacer::open_loop(rate, connections, index, 5 * MS, 105 * MS, None);
            while let Some(t) = pacer.take_due(u64::MAX / 2) {
                intended.push(t);
            }
        }
        intended.sort_unstable();
        assert_eq!(intended.len(), 1000, "100 ms at 10,000/s");
        assert_eq!(intended[0], 5 * MS);
        for pair in intended.windows(2) {
            assert_eq!(pair[1] - pair[0], 100 * US);
        }
    }

    #[test]
    fn open_loop_sends_nothing_early_and_catches_up_when_late() {
        let mut pacer = Pacer::open_loop(1000.0, 1, 0, 0, 10 * MS, None);
        assert_eq!(pacer.take_due(0), Some(0));
        assert_eq!(pacer.take_due(MS - 1), None);
        assert_eq!(pacer.next_due_ns(), Some(MS));
        // Five milliseconds late: everything intended until now is due at once.
        let backlog: Vec<u64> = std::iter::from_fn(|| pacer.take_due(5 * MS)).collect();
        assert_eq!(backlog, vec![MS, 2 * MS, 3 * MS, 4 * MS, 5 * MS]);
    }

    #[test]
    fn request_limit_ends_either_schedule() {
        let mut closed = Pacer::closed_loop(u64::MAX, Some(3));
        assert_eq!((0..10).filter_map(|t| closed.take_due(t)).count(), 3);
        assert!(closed.is_over(0));
        let mut open = Pacer::open_loop(1e6, 1, 0, 0, u64::MAX, Some(2));
        assert_eq!(std::iter::from_fn(|| open.take_due(MS)).count(), 2);
        assert_eq!(open.next_due_ns(), None);
    }

    #[test]
    fn rate_is_count_over_elapsed_time() {
        assert_eq!(per_second(5_000, 2_000 * MS), 2_500.0);
        assert_eq!(per_second(5, 0), 0.0);
        assert_eq!(
            latency_ns(10, 5),
            0,
            "a completion before the intent is clamped"
        );
    }
}
