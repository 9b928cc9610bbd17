//! [`Circuit`]: the circuit breaker's state machine, shared by the LLM
//! provider layer ([`BreakerLayer`](super::BreakerLayer)) and the
//! orchestrator's per-role gates. Closed, it counts failures in a row; at the
//! threshold it opens and refuses everything until the reset time; then it
//! is half-open: one trial goes through (the others are still refused) and
//! its outcome closes or reopens it. Every change is a log event and a gauge.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BreakerConfig;
use crate::telemetry::events::{CircuitChanged, emit};

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls pass; failures in a row are counted.
    Closed,
    /// Calls fail at once until the reset time.
    Open,
    /// One trial call decides.
    HalfOpen,
}

impl CircuitState {
    /// The gauge's value: 0 closed, 1 half-open, 2 open.
    pub(crate) fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open => 2.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `trial_until`: when a running trial is deemed lost (never reported).
    HalfOpen {
        trial_until: Option<Instant>,
    },
}

fn current(state: &State) -> CircuitState {
    match state {
        State::Closed { .. } => CircuitState::Closed,
        State::Open { .. } => CircuitState::Open,
        State::HalfOpen { .. } => CircuitState::HalfOpen,
    }
}

/// How long a refused caller is told to wait while a trial runs.
const TRIAL_WAIT: Duration = Duration::from_secs(1);

/// One breaker: what it guards (`label` = `name` on its gauge `metric`).
#[derive(Debug)]
pub(crate) struct Circuit {
    metric: &'static str,
    label: &'static str,
    name: String,
    config: BreakerConfig,
    /// How long a trial may run before it is deemed lost and another goes.
    trial_timeout: Duration,
    state: Mutex<State>,
}

impl Circuit {
    /// A closed circuit; its gauge is set at once. A trial that has not
    /// reported after `trial_timeout` is deemed lost (its caller vanished).
    pub(crate) fn new(
        metric: &'static str,
        label: &'static str,
        name: impl Into<String>,
        config: BreakerConfig,
        trial_timeout: Duration,
    ) -> Self {
        let circuit = Self {
            metric,
            label,
            name: name.into(),
            config,
            trial_timeout,
            state: Mutex::new(State::Closed { failures: 0 }),
        };
        circuit.publish(None, CircuitState::Closed);
        circuit
    }

    /// What it guards.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole; a poisoned lock is safe to reuse.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, before: Option<CircuitState>, state: CircuitState) {
        emit(CircuitChanged {
            metric: self.metric,
            label: self.label,
            name: &self.name,
            before,
            state,
            threshold: self.config.failure_threshold,
            reset_after: self.config.reset_timeout,
        });
    }

    /// Where it stands now (an open circuit past its reset time reports
    /// open until something asks to pass).
    pub(crate) fn state(&self) -> CircuitState {
        current(&self.lock())
    }

    /// Lets one through (`Ok(is_trial)`) or says how long to wait.
    pub(crate) fn admit(&self) -> Result<bool, Duration> {
        let now = Instant::now();
        let trial = State::HalfOpen {
            trial_until: Some(now + self.trial_timeout),
        };
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } => {
                *state = trial;
                drop(state);
                self.publish(Some(CircuitState::Open), CircuitState::HalfOpen);
                Ok(true)
            }
            State::HalfOpen {
                trial_until: Some(until),
            } if now < until => Err((until - now).min(self.config.reset_timeout).min(TRIAL_WAIT)),
            State::HalfOpen { .. } => {
                *state = trial;
                Ok(true)
            }
        }
    }

    /// Takes an outcome into account: `failed` says whether it counts
    /// against what the circuit guards; `trial` is what [`admit`](Self::admit) said.
    pub(crate) fn record(&self, failed: bool, trial: bool) {
        let mut state = self.lock();
        let before = current(&state);
        let reopen = State::Open {
            until: Instant::now() + self.config.reset_timeout,
        };
        // (reset_timeout is at most a day: validated with the configuration.)
        *state = match (*state, failed, trial) {
            (_, false, true) => State::Closed { failures: 0 },
            (_, true, true) => reopen,
            (State::Closed { .. }, false, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true, false) => {
                if failures + 1 >= self.config.failure_threshold {
                    reopen
                } else {
                    State::Closed {
                        failures: failures + 1,
                    }
                }
            }
            // Let through before the circuit opened: says nothing new.
            (unchanged, _, false) => unchanged,
        };
        let after = current(&state);
        drop(state);
        if before != after {
            self.publish(Some(before), after);
        }
    }

    /// A trial ended without an outcome (dropped, cancelled): let the next one try.
    pub(crate) fn abandon_trial(&self) {
        let mut state = self.lock();
        if matches!(*state, State::HalfOpen { .. }) {
            *state = State::HalfOpen { trial_until: None };
        }
    }
}
