//! Live progress of one task on a terminal: a spinner with the plan's state,
//! and a line for every step. Nothing is drawn when stderr is not a terminal.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use troupe::core::TaskId;
use troupe::core::ledger::{EventKind, ProgressEntry, StepData};

/// The display, hidden when not on a terminal.
pub(crate) struct Live {
    bar: ProgressBar,
    total: usize,
    done: usize,
}

impl Live {
    /// A spinner on stderr if it is a terminal and `enabled`.
    pub(crate) fn new(enabled: bool) -> Self {
        let bar = if enabled && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        } else {
            ProgressBar::hidden()
        };
        bar.set_message("submitting");
        Self {
            bar,
            total: 0,
            done: 0,
        }
    }

    /// Shows one stored step of `task`.
    pub(crate) fn show(&mut self, task: TaskId, entry: &ProgressEntry) {
        if entry.task_id != task || self.bar.is_hidden() {
            return;
        }
        match entry.event {
            EventKind::PlanAccepted => {
                if let Some(StepData::Plan { subtasks, .. }) = &entry.data {
                    self.total = subtasks.len();
                    self.done = 0;
                }
            }
            EventKind::SubtaskCompleted => self.done += 1,
            _ => {}
        }
        let subject = match (&entry.subtask_id, entry.attempt) {
            (Some(s), Some(a)) if a > 1 => format!("{s}#{a} "),
            (Some(s), _) => format!("{s} "),
            (None, _) => String::new(),
        };
        let detail: String = entry
            .detail
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(100)
            .collect();
        self.bar
            .println(format!("  {subject}{}  {detail}", entry.event));
        let state = match entry.event {
            EventKind::PlanningStarted | EventKind::PlanRejected => "planning".to_owned(),
            EventKind::SynthesisStarted => "writing the answer".to_owned(),
            EventKind::Replanning => "re-planning".to_owned(),
            _ if self.total > 0 => format!("{}/{} subtasks done", self.done, self.total),
            _ => "working".to_owned(),
        };
        self.bar.set_message(state);
    }

    /// Removes the spinner.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
