//! Which workers answer: each is asked for its info (through the link, so a worker that refuses
//! the secret counts as down) every `query.worker_check_ms`; planning reads the last answers.

use crate::distributed::link::WorkerLink;
use datafusion_distributed::{ChannelResolver, GetWorkerInfoRequest};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use url::Url;

/// The last check of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerHealth {
    pub url: Url,
    /// `None` when it answered; else why not.
    pub problem: Option<String>,
}

/// The workers' last known health.
#[derive(Debug)]
pub struct Health {
    workers: RwLock<Vec<WorkerHealth>>,
}

impl Health {
    /// Every worker unchecked yet, counted down until its first answer.
    pub fn new(urls: &[Url]) -> Self {
        Self {
            workers: RwLock::new(
                urls.iter()
                    .map(|u| WorkerHealth {
                        url: u.clone(),
                        problem: Some("not checked yet".into()),
                    })
                    .collect(),
            ),
        }
    }

    /// Records a check's outcome by hand (tests).
    #[cfg(test)]
    pub(crate) fn set(&self, url: &Url, problem: Option<&str>) {
        if let Ok(mut w) = self.workers.write() {
            for h in w.iter_mut().filter(|h| &h.url == url) {
                h.problem = problem.map(str::to_string);
            }
        }
    }

    pub fn snapshot(&self) -> Vec<WorkerHealth> {
        self.workers.read().map(|w| w.clone()).unwrap_or_default()
    }

    /// Checks every worker once, at most `timeout` each (concurrently).
    pub async fn check(&self, link: &WorkerLink, timeout: Duration) {
        let before = self.snapshot();
        let checks = before.iter().map(|w| w.url.clone()).map(|url| async move {
            let problem = match tokio::time::timeout(timeout, ask(link, &url)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
            };
            WorkerHealth { url, problem }
        });
        let fresh = futures::future::join_all(checks).await;
        for w in &fresh {
            let up = if w.problem.is_none() { 1.0 } else { 0.0 };
            metrics::gauge!("datagate_worker_up", "worker" => w.url.to_string()).set(up);
        }
        for (old, new) in before.iter().zip(&fresh) {
            match (&old.problem, &new.problem) {
                (Some(_), None) => tracing::info!(worker = %new.url, "worker up"),
                (None, Some(p)) => tracing::warn!(worker = %new.url, problem = %p, "worker down"),
                _ => {}
            }
        }
        if let Ok(mut w) = self.workers.write() {
            *w = fresh;
        }
    }

    /// Checks every `every` (each check at most `timeout`) while the returned task runs.
    pub fn watch(
        self: &Arc<Self>,
        link: WorkerLink,
        every: Duration,
        timeout: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                health.check(&link, timeout).await;
            }
        })
    }
}

async fn ask(link: &WorkerLink, url: &Url) -> Result<(), String> {
    let mut client = link
        .get_worker_client_for_url(url)
        .await
        .map_err(|e| first_line(&e.to_string()))?;
    client
        .get_worker_info(GetWorkerInfoRequest {})
        .await
        .map(|_| ())
        .map_err(|e| first_line(&e.to_string()))
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}
