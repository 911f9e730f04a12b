//! A worker's activation as plain data: idle, or active with some reports sent, and how it
//! answers the dispatcher's orders (the worker's side of the activation protocol, sans-IO: the
//! lifecycle sends the reply; the dispatcher's activation simulation drives it directly).

use proto::{Message, WorkerId};

/// Whether the worker is activated, and how far through its reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    Idle,
    Active {
        reports_sent: u32,
    },
}

impl Activation {
    /// The answer to "status check".
    pub fn is_activated(&self) -> bool {
        matches!(self, Activation::Active { .. })
    }

    /// "activate": true when this started an activation, false when already active.
    pub fn activate(&mut self) -> bool {
        if self.is_activated() {
            return false;
        }
        *self = Activation::Active { reports_sent: 0 };
        true
    }

    /// Sends the next of `reports` reports: returns what it says ("activated" = `true`), or
    /// `None` when idle. The last report says "not activated" and leaves the worker idle.
    pub fn next_report(&mut self, reports: u32) -> Option<bool> {
        let Activation::Active { reports_sent } = *self else {
            return None;
        };
        let sent = reports_sent + 1;
        if sent >= reports {
            *self = Activation::Idle;
            Some(false)
        } else {
            *self = Activation::Active { reports_sent: sent };
            Some(true)
        }
    }
}

/// What an order from the dispatcher calls for.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Send `reply`; `started` when an "activate" began an activation (schedule its reports).
    Reply { reply: Message, started: bool },
    /// An order for another worker id: ignored.
    NotForMe(WorkerId),
    /// Not an order.
    NotAnOrder,
}

impl Activation {
    /// The answer of worker `me` to `order`: "status check" gets the activation state, and
    /// "activate" activates (once) and is confirmed either way, each echoing its request.
    pub fn answer(&mut self, me: WorkerId, order: &Message) -> Answer {
        match *order {
            Message::StatusCheck { worker_id, request } if worker_id == me => Answer::Reply {
                reply: Message::Status {
                    activated: self.is_activated(),
                    request,
                },
                started: false,
            },
            Message::Activate { worker_id, request } if worker_id == me => Answer::Reply {
                started: self.activate(),
                reply: Message::WorkerActivated { request },
            },
            Message::StatusCheck { worker_id, .. } | Message::Activate { worker_id, .. } => {
                Answer::NotForMe(worker_id)
            }
            _ => Answer::NotAnOrder,
        }
    }
}

/// Whether a worker that just deactivated terminates, given a uniform `roll` in [0, 1).
pub fn terminates(probability: f64, roll: f64) -> bool {
    roll < probability
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_reports_then_idle() {
        let mut a = Activation::default();
        assert!(!a.is_activated());
        assert_eq!(a.next_report(5), None, "an idle worker sends no report");
        assert!(a.activate());
        assert!(!a.activate(), "activating twice is refused");
        let said: Vec<bool> = (0..5).map(|_| a.next_report(5).unwrap()).collect();
        assert_eq!(said, vec![true, true, true, true, false]);
        assert_eq!(a, Activation::Idle);
        assert!(a.activate(), "an idle worker can be activated again");
    }

    #[test]
    fn a_single_report_deactivates_at_once() {
        let mut a = Activation::default();
        a.activate();
        assert_eq!(a.next_report(1), Some(false));
        assert!(!a.is_activated());
    }

    #[test]
    fn orders_are_answered_with_their_request_numbers() {
        let mut a = Activation::default();
        let check = |request| Message::StatusCheck {
            worker_id: 7,
            request,
        };
        let status = |activated, request| Answer::Reply {
            reply: Message::Status { activated, request },
            started: false,
        };
        assert_eq!(a.answer(7, &check(1)), status(false, 1));
        let activate = Message::Activate {
            worker_id: 7,
            request: 2,
        };
        let confirmed = |started| Answer::Reply {
            reply: Message::WorkerActivated { request: 2 },
            started,
        };
        assert_eq!(a.answer(7, &activate), confirmed(true));
        assert_eq!(a.answer(7, &activate), confirmed(false), "confirmed again");
        assert_eq!(a.answer(7, &check(3)), status(true, 3));
        assert_eq!(a.answer(8, &check(4)), Answer::NotForMe(7));
        assert_eq!(a.answer(7, &Message::Heartbeat), Answer::NotAnOrder);
    }

    #[test]
    fn termination_follows_the_probability() {
        assert!(!terminates(0.0, 0.0));
        assert!(terminates(1.0, 0.999));
        assert!(terminates(0.8, 0.79) && !terminates(0.8, 0.8));
    }
}
