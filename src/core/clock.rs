//! The clock as a value: every time-dependent decision takes one, so tests and the planner
//! control time and nothing sleeps to test a schedule (STYLE: "pass `now` in"). Pure: no I/O.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// The current time; injected so tests and the daemon's planner control it.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// A clock tests can set and advance.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(t: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(t)))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().expect("clock") = t;
    }
    pub fn advance(&self, d: chrono::Duration) {
        *self.0.lock().expect("clock") += d;
    }
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
    pub fn clock(&self) -> Clock {
        let me = self.clone();
        Arc::new(move || me.now())
    }
}
