//! A node's health as a state machine over check results, pingora's `health_check` model: a
//! state flips only after a run of results that agree (`rise` in a row to come up, `fall` in a
//! row to go down), so one lost ping never flaps it. Pure: results in, transitions out.

use serde::Serialize;

/// What the monitor believes about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// No result yet.
    Unknown,
    /// The machine answers ICMP and the service answers its ping.
    Up,
    /// The machine answers, the service does not: a paused container, a hung process.
    ServiceDown,
    /// Neither answers: stopped, or cut off.
    MachineDown,
}

/// One poll of one node: did the machine answer an ICMP echo, did the service answer its ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub machine: bool,
    pub service: bool,
}

impl Probe {
    /// What this one result alone says. A service that answers runs on a machine that is up,
    /// whatever ICMP said (a firewall may drop echoes).
    pub fn verdict(self) -> Health {
        match (self.machine, self.service) {
            (_, true) => Health::Up,
            (true, false) => Health::ServiceDown,
            (false, false) => Health::MachineDown,
        }
    }
}

/// Results in a row needed before a flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// To become `Up`.
    pub rise: u32,
    /// To leave `Up` (or move between the two down states).
    pub fall: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { rise: 1, fall: 2 }
    }
}

/// A state change, for the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
}

/// One node's health and the run of results that disagree with it.
#[derive(Debug, Clone)]
pub struct Tracker {
    state: Health,
    /// The verdict the latest results agree on, and how many in a row.
    pending: Option<(Health, u32)>,
    thresholds: Thresholds,
}

impl Tracker {
    pub fn new(thresholds: Thresholds) -> Tracker {
        Tracker {
            state: Health::Unknown,
            pending: None,
            thresholds,
        }
    }

    pub fn state(&self) -> Health {
        self.state
    }

    /// Whether the latest result disagreed with the state (the poller then probes again soon
    /// instead of a whole interval later).
    pub fn wavering(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes one result; returns the transition it completes, if any. The first result sets the
    /// state at once (`Unknown` says nothing to hold on to).
    pub fn observe(&mut self, probe: Probe) -> Option<Transition> {
        let verdict = probe.verdict();
        if verdict == self.state {
            self.pending = None;
            return None;
        }
        let run = match self.pending {
            Some((pending, n)) if pending == verdict => n + 1,
            _ => 1,
        };
        let needed = match (self.state, verdict) {
            (Health::Unknown, _) => 1,
            (_, Health::Up) => self.thresholds.rise,
            _ => self.thresholds.fall,
        };
        if run >= needed {
            let from = self.state;
            self.state = verdict;
            self.pending = None;
            Some(Transition { from, to: verdict })
        } else {
            self.pending = Some((verdict, run));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: Probe = Probe {
        machine: true,
        service: true,
    };
    const PAUSED: Probe = Probe {
        machine: true,
        service: false,
    };
    const GONE: Probe = Probe {
        machine: false,
        service: false,
    };

    #[test]
    fn the_first_result_sets_the_state() {
        let mut t = Tracker::new(Thresholds::default());
        assert_eq!(t.state(), Health::Unknown);
        assert_eq!(
            t.observe(PAUSED),
            Some(Transition {
                from: Health::Unknown,
                to: Health::ServiceDown
            })
        );
    }

    #[test]
    fn one_lost_ping_does_not_flap_two_in_a_row_do() {
        let mut t = Tracker::new(Thresholds { rise: 1, fall: 2 });
        t.observe(UP);
        assert_eq!(t.observe(PAUSED), None, "one failure is not enough");
        assert!(t.wavering());
        assert_eq!(t.observe(UP), None, "and a success resets the run");
        assert!(!t.wavering());
        assert_eq!(t.observe(PAUSED), None);
        assert_eq!(
            t.observe(PAUSED),
            Some(Transition {
                from: Health::Up,
                to: Health::ServiceDown
            })
        );
        assert_eq!(
            t.observe(UP),
            Some(Transition {
                from: Health::ServiceDown,
                to: Health::Up
            })
        );
    }

    #[test]
    fn a_run_must_agree_on_the_verdict() {
        let mut t = Tracker::new(Thresholds { rise: 2, fall: 2 });
        t.observe(UP);
        // Service-down then machine-down: two failures, but not two of the same kind.
        assert_eq!(t.observe(PAUSED), None);
        assert_eq!(t.observe(GONE), None);
        assert_eq!(t.state(), Health::Up);
        assert_eq!(t.observe(GONE).map(|t| t.to), Some(Health::MachineDown));
        // Coming back needs `rise` in a row.
        assert_eq!(t.observe(UP), None);
        assert_eq!(t.observe(UP).map(|t| t.to), Some(Health::Up));
    }

    #[test]
    fn a_service_that_answers_is_up_whatever_icmp_says() {
        let firewalled = Probe {
            machine: false,
            service: true,
        };
        assert_eq!(firewalled.verdict(), Health::Up);
        assert_eq!(GONE.verdict(), Health::MachineDown);
    }
}
