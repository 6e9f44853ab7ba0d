//! A line for slots, served in the order the jobs' status reports: by when each job got in
//! line for its slot (its submission for a staging slot, the end of its staging for a run
//! slot: [`Job::ready_at`](crate::jobs::model::Job::ready_at)), then by id.
//!
//! Why not tokio's semaphore: it serves waiters in the order their drivers happened to reach
//! it, and a driver reaches it after reads of its own. A job approved by the publisher, or
//! whose driver came back from a retry, or simply one whose driver was scheduled a moment
//! later, went behind jobs its status said were behind it. Here a free slot always goes to
//! the waiter the status puts first.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// A waiter's place: when it got in line (seconds since the epoch), its job id, and a
/// number that tells apart two waits of the same job (a driver that ended and its next).
#[derive(Debug, Clone)]
pub(super) struct Turn {
    at: f64,
    id: String,
    seq: u64,
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Turn {}
impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at
            .total_cmp(&other.at)
            .then_with(|| self.id.cmp(&other.id))
            .then(self.seq.cmp(&other.seq))
    }
}

/// A fixed number of slots and the jobs waiting for one, first in line first served.
pub(super) struct Line {
    state: Mutex<State>,
}

struct State {
    free: usize,
    waiting: BTreeMap<Turn, oneshot::Sender<()>>,
    seq: u64,
}

impl State {
    /// Hands the free slots to the first waiters.
    fn grant(&mut self) {
        while self.free > 0 {
            let Some((_, tx)) = self.waiting.pop_first() else {
                return;
            };
            // A waiter takes itself out of `waiting` before it goes, under this lock: the
            // send reaches it.
            if tx.send(()).is_ok() {
                self.free -= 1;
            }
        }
    }
}

/// A slot held; it goes to the next in line when dropped.
pub(super) struct Place {
    line: Arc<Line>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.line.give_back();
    }
}

impl Line {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                free: slots,
                waiting: BTreeMap::new(),
                seq: 0,
            }),
        })
    }

    /// Slots free now (none while anyone waits: a freed slot goes to a waiter at once).
    pub fn available(&self) -> usize {
        self.state.lock().unwrap().free
    }

    /// How many wait (for tests: whether a driver got in line yet).
    #[cfg(test)]
    pub fn in_line(&self) -> usize {
        self.state.lock().unwrap().waiting.len()
    }

    /// A slot if one is free now, without waiting (a run that already goes on, re-attached
    /// after a restart, takes one when it can and never waits for one).
    pub fn try_take(self: &Arc<Self>) -> Option<Place> {
        let mut state = self.state.lock().unwrap();
        if state.free == 0 {
            return None;
        }
        state.free -= 1;
        Some(Place { line: self.clone() })
    }

    /// Waits for a slot, behind every waiter that got in line before `at` (ties by `id`).
    /// Dropping the future leaves the line, and gives back a slot granted meanwhile.
    pub async fn take(self: &Arc<Self>, (at, id): (f64, &str)) -> Place {
        let (tx, rx) = oneshot::channel();
        let turn = {
            let mut state = self.state.lock().unwrap();
            state.seq += 1;
            let turn = Turn {
                at,
                id: id.to_string(),
                seq: state.seq,
            };
            state.waiting.insert(turn.clone(), tx);
            state.grant();
            turn
        };
        let mut waiter = Waiter {
            line: self.clone(),
            turn,
            rx: Some(rx),
        };
        let granted = waiter.rx.as_mut().expect("not yet taken").await;
        waiter.rx = None;
        granted.expect("a waiter's sender is dropped only after its send");
        Place { line: self.clone() }
    }

    fn give_back(&self) {
        let mut state = self.state.lock().unwrap();
        state.free += 1;
        state.grant();
    }
}

/// A wait under way; leaves the line if dropped before its slot came.
struct Waiter {
    line: Arc<Line>,
    turn: Turn,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.rx.is_none() {
            return;
        }
        let mut state = self.line.state.lock().unwrap();
        // Still in line: just leave. Otherwise a slot was sent that nobody will hold.
        if state.waiting.remove(&self.turn).is_none() {
            state.free += 1;
            state.grant();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;

    /// A task that waits for a slot of the line, says its name once it holds one, and keeps
    /// the slot until told to let go.
    struct Holder {
        name: &'static str,
        task: tokio::task::JoinHandle<()>,
        let_go: oneshot::Sender<()>,
    }

    fn wait(
        line: &Arc<Line>,
        at: f64,
        name: &'static str,
        held: &mpsc::UnboundedSender<&'static str>,
    ) -> Holder {
        let (line, held) = (line.clone(), held.clone());
        let (let_go, go) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _place = line.take((at, name)).await;
            held.send(name).unwrap();
            let _ = go.await;
        });
        Holder { name, task, let_go }
    }

    async fn next(got: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
        tokio::time::timeout(Duration::from_secs(5), got.recv())
            .await
            .expect("a slot is handed on")
            .unwrap()
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_first_in_line_not_the_first_to_ask() {
        let line = Line::new(1);
        let (held, mut got) = mpsc::unbounded_channel();
        let first = line.try_take().expect("one slot free");
        assert_eq!(line.available(), 0);
        assert!(line.try_take().is_none());
        // They come to the line in the order c, a, b; they got in line a, b, c.
        let mut holders = vec![];
        for (at, name) in [(3.0, "c"), (1.0, "a"), (2.0, "b")] {
            holders.push(wait(&line, at, name, &held));
            settle().await;
        }
        assert!(got.try_recv().is_err(), "nobody holds a slot yet");
        drop(first);
        for expected in ["a", "b", "c"] {
            assert_eq!(next(&mut got).await, expected);
            settle().await;
            assert!(got.try_recv().is_err(), "one slot, one holder");
            let i = holders.iter().position(|h| h.name == expected).unwrap();
            let holder = holders.remove(i);
            holder.let_go.send(()).unwrap();
            holder.task.await.unwrap();
        }
        assert_eq!(line.available(), 1);
    }

    /// One holder counted in `0` while it lives.
    struct Held(Arc<std::sync::atomic::AtomicUsize>);

    impl Held {
        fn count(holding: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
            holding.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Self(holding.clone())
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Many drivers on a multi-threaded runtime take, hold and give back slots, and many
    /// leave while they wait (a stop, a timeout): never more holders than slots, and in the
    /// end every slot is free and nobody is left in line.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_contention_and_cancellation_no_slot_is_lost_or_doubled() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        const SLOTS: usize = 3;
        let line = Line::new(SLOTS);
        let holding = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![];
        for i in 0..300u64 {
            let (line, holding, most) = (line.clone(), holding.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let id = format!("job-{i}");
                // Every third waiter gives up after a moment, whether or not its turn came.
                let patience = Duration::from_micros(if i % 3 == 0 { 50 } else { 60_000_000 });
                let at = (i % 17) as f64;
                if let Ok(_place) = tokio::time::timeout(patience, line.take((at, &id))).await {
                    // Counted off when dropped, before its place is (an abort drops both).
                    let _held = Held::count(&holding);
                    most.fetch_max(holding.load(Ordering::SeqCst), Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            // Some are aborted from outside, wherever they are.
            if i % 7 == 0 {
                task.abort();
                let _ = task.await;
            } else {
                task.await.unwrap();
            }
        }
        assert!(
            most.load(Ordering::SeqCst) <= SLOTS,
            "more holders than slots"
        );
        assert!(most.load(Ordering::SeqCst) >= 1);
        assert_eq!(line.available(), SLOTS, "a slot was lost");
        assert_eq!(line.in_line(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_holds_no_place_and_loses_no_slot() {
        let line = Line::new(1);
        let (held, mut got) = mpsc::unbounded_channel();
        let first = line.try_take().unwrap();
        let gone = wait(&line, 1.0, "gone", &held);
        let _next = wait(&line, 2.0, "next", &held);
        settle().await;
        // The first in line leaves (its job stopped while it waited): the slot skips it.
        gone.task.abort();
        settle().await;
        assert_eq!(line.in_line(), 1, "it left the line");
        drop(first);
        assert_eq!(next(&mut got).await, "next");

        // A slot granted to a wait that is dropped before it looks goes back to the line.
        let line = Line::new(0);
        let mut waiting = Box::pin(line.take((1.0, "late")));
        assert!(futures::poll!(&mut waiting).is_pending());
        line.give_back();
        assert_eq!(line.available(), 0, "granted to the waiter");
        drop(waiting);
        assert_eq!(line.available(), 1, "given back");
    }
}
