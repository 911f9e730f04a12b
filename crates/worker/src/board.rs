//! What `worker status` reports: one row per worker task of this process.

use std::sync::{Arc, Mutex};

use proto::{WorkerProcessStatus, WorkerTaskStatus};

#[derive(Debug, Clone)]
pub struct Board(Arc<Mutex<Vec<WorkerTaskStatus>>>);

impl Board {
    pub fn new(count: u32) -> Self {
        let rows = (0..count)
            .map(|index| WorkerTaskStatus {
                index,
                id: None,
                weight: 0,
                state: "starting".into(),
                dispatcher: None,
                activations: 0,
                registrations: 0,
            })
            .collect();
        Board(Arc::new(Mutex::new(rows)))
    }

    pub fn update(&self, index: u32, change: impl FnOnce(&mut WorkerTaskStatus)) {
        let mut rows = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(row) = rows.get_mut(index as usize) {
            change(row);
        }
    }

    pub fn snapshot(&self) -> WorkerProcessStatus {
        let rows = self.0.lock().unwrap_or_else(|p| p.into_inner());
        WorkerProcessStatus {
            workers: rows.clone(),
        }
    }
}
