//! A one-off measurement, not a benchmark suite: how fast the history
//! projector applies `message:new` events to SQLite (a temp file, as
//! [`confab_membership::sql::connect`] configures it: WAL, synchronous
//! NORMAL) one by one ([`HistoryProjector::apply`], one transaction per
//! event), in batches ([`HistoryProjector::apply_batch`] on chunks of
//! [`MAX_BATCH_ITEMS`]) and as [`HistoryProjector::run`] does it (tailing
//! an in-process bus that already holds every event).
//!
//! ```text
//! nice -n 10 cargo run --release -p confab-membership \
//!     --example history_projector_throughput [items]
//! ```
//!
//! Prints items/s (wall clock) and the CPU time of the whole process (user
//! + system, from `/proc/self/stat`, so Linux only and in 10 ms ticks).

use std::sync::Arc;
use std::time::{Duration, Instant};

use confab_bus::{Bus, BusMessage, InProcessBus, TailItem};
use confab_events::RoomId;
use confab_events::socket::{Message, names};
use confab_membership::history::{HistoryProjector, MAX_BATCH_ITEMS};
use futures::StreamExt;

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // USER_HZ: 100 on every Linux architecture Confab runs on.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat (Linux only)");
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 1..]
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// A bus holding `n` `message:new` events spread over 100 rooms, and
/// those events as the tail delivers them.
async fn events(n: usize) -> (Arc<InProcessBus>, Vec<TailItem>) {
    let bus = Arc::new(InProcessBus::default());
    for i in 0..n {
        let room = format!("channel:r{}", i % 100);
        let message = Message {
            id: format!("m{i}"),
            room: room.clone(),
            author_id: format!("u{}", i % 100),
            body: "a chat message of a typical length, some sixty bytes long".into(),
            thread_id: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: None,
        };
        let data = serde_json::to_value(&message).unwrap();
        bus.publish(
            &RoomId::parse(&room).unwrap(),
            BusMessage::new(names::MESSAGE_NEW, &data),
        )
        .await
        .unwrap();
    }
    let items = bus
        .tail(1)
        .await
        .unwrap()
        .take(n)
        .map(Result::unwrap)
        .collect()
        .await;
    (bus, items)
}

async fn measure<F: Future<Output = ()>>(label: &str, n: usize, work: F) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    work.await;
    let (wall, cpu) = (wall.elapsed(), cpu_time() - cpu);
    println!(
        "{label:<28} {n} items in {:>7.1} ms: {:>8.0} items/s, CPU {:>6} ms ({:.3} ms/item)",
        wall.as_secs_f64() * 1e3,
        n as f64 / wall.as_secs_f64(),
        cpu.as_millis(),
        cpu.as_secs_f64() * 1e3 / n as f64,
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("items: a number"))
        .unwrap_or(5_000);
    let (bus, items) = events(n).await;
    let last = items.last().and_then(|i| i.msg.seq).unwrap_or(0);
    let dir = tempfile::tempdir().unwrap();
    let mut databases = 0;
    let mut fresh = || {
        databases += 1;
        let path = dir.path().join(format!("history-{databases}.db"));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        async move { confab_membership::sql::connect(&url).await.unwrap() }
    };

    let projector = HistoryProjector::new(fresh().await, bus.clone());
    measure("one by one (apply)", n, async {
        for item in &items {
            assert!(projector.apply(item).await.unwrap());
        }
    })
    .await;

    let projector = HistoryProjector::new(fresh().await, bus.clone());
    measure("batched (apply_batch)", n, async {
        for chunk in items.chunks(MAX_BATCH_ITEMS) {
            assert_eq!(projector.apply_batch(chunk).await.unwrap(), chunk.len());
        }
    })
    .await;

    let projector = HistoryProjector::new(fresh().await, bus.clone());
    measure("batched (run, bus tail)", n, async {
        let mut progress = projector.subscribe();
        let stop = tokio_util::sync::CancellationToken::new();
        let running = projector.run(stop.clone().cancelled_owned());
        let done = async {
            progress.wait_for(|p| *p >= last).await.unwrap();
            stop.cancel();
        };
        futures::join!(running, done);
    })
    .await;
    assert_eq!(projector.checkpoint().await.unwrap(), last);
}
