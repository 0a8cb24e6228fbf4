//! The virtual clock of system heterogeneity (`[system]`, `events.stragglers`): how long each round
//! takes in the federation being simulated, from the clients' profiles and the exact encoded sizes of
//! the messages of the round.

use super::{Engine, RoundState};
use crate::report::RoundRecord;

impl Engine {
    /// The round lasts until its last reporting client finishes (latency, download of the exact
    /// broadcast, its local work, upload of its exact update), or until the deadline when the deadline
    /// (or a scripted dropout) kept a selected client from reporting in full. Records
    /// `virtual_round_s` and the cumulative `virtual_time_s`, and times the next plan's transfers with
    /// this round's message sizes.
    pub(super) fn advance_virtual_clock(&mut self, state: &RoundState, rec: &mut RoundRecord) {
        if !self.participation.has_system() {
            return;
        }
        let (round, down) = (state.round, state.broadcast_len);
        let mut last = 0.0f64;
        for &(c, up) in &state.up_bytes {
            if !state.reported.contains(&c) {
                continue;
            }
            let w = self
                .scenario
                .train
                .work(self.data.partition.client_len(c as usize));
            let samples = match state.max_steps.get(&c) {
                Some(&m) if w.steps > 0 => w.samples * m.min(w.steps) / w.steps,
                _ => w.samples,
            };
            if let Some(t) = self.participation.finish_s(round, c, samples, down, up) {
                last = last.max(t);
            }
        }
        let deadline = self.participation.deadline_s();
        if state.waits_for_deadline && deadline > 0.0 {
            last = last.max(deadline);
        }
        last = last.max(state.idle_s);
        let total = self.summary.virtual_time_s.unwrap_or(0.0) + last;
        rec.extra.insert("virtual_round_s".into(), last);
        rec.extra.insert("virtual_time_s".into(), total);
        if let Some(up) = state.up_bytes.iter().map(|&(_, b)| b).max() {
            self.participation.set_message_bytes(down, up);
        }
    }
}
