//! Optimistic concurrency under concurrent commands, on the JetStream event
//! log of a real nats-server, with two service instances (two caches)
//! racing on one channel.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use confab_bus::NatsBus;
use confab_events::UserId;
use confab_events::membership::{MembershipEvent, Role};
use confab_membership::domain::{AggregateState, Command};
use confab_membership::jetstream_store::JetStreamEventStore;
use confab_membership::service::{MembershipService, ServiceSettings};
use confab_test_support::NatsServer;

/// Replays a channel's log, checking every event was valid when applied
/// (no double join, no departure of a non-member); returns the members.
fn replay_checked(events: &[confab_membership::store::Stored]) -> BTreeSet<UserId> {
    let mut members = BTreeSet::new();
    for s in events {
        match &s.envelope.event {
            MembershipEvent::ChannelCreated { created_by, .. } => {
                assert!(members.insert(created_by.clone()));
            }
            MembershipEvent::ChannelMemberJoined { user, .. } => {
                assert!(
                    members.insert(user.clone()),
                    "{user} joined twice (seq {})",
                    s.seq
                );
            }
            MembershipEvent::ChannelMemberLeft { user, .. } => {
                assert!(
                    members.remove(user),
                    "{user} left without being in (seq {})",
                    s.seq
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    members
}

/// A started NATS-mode core on `server`, bootstrapped, and its bus.
async fn bootstrapped(server: &NatsServer) -> (NatsBus, Running) {
    let bus = nats_bus(&server.url()).await;
    let running = start(nats_core(bus.clone()).await).await;
    bootstrap(&running.service).await;
    (bus, running)
}

/// Adds `n` members `{prefix}0`, `{prefix}1`, ... to workspace `w`;
/// returns their names.
async fn add_members(service: &MembershipService, prefix: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for name in &names {
        let add = Command::AddWorkspaceMember {
            workspace: w("w"),
            user: u(name),
            role: Role::Member,
        };
        service.execute(add, &system()).await.unwrap();
    }
    names
}

/// Another instance of `a`'s service: same log (on `bus`), same
/// projections, its own cache.
async fn another_instance(bus: &NatsBus, a: &MembershipService) -> MembershipService {
    MembershipService::new(
        Arc::new(JetStreamEventStore::from_bus(bus).await.unwrap()),
        Arc::clone(a.read_model()),
        Arc::clone(a.bus()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_and_kicks_stay_consistent() {
    let server = NatsServer::start();
    let (bus, running) = bootstrapped(&server).await;
    let a = Arc::clone(&running.service);
    let users = add_members(&a, "u", 10).await;
    // A second instance: same log, same projections, its own cache.
    let b = Arc::new(another_instance(&bus, &a).await);

    // 20 commands at once on channel `pub`: every user joins, and the admin
    // kicks every user; half through each instance.
    let mut tasks = Vec::new();
    for (i, name) in users.iter().enumerate() {
        let svc = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let r = svc
                .execute(Command::JoinChannel { channel: c("pub") }, &user(&name))
                .await;
            ("join", name, r)
        }));
        let svc = if i % 2 == 0 {
            Arc::clone(&b)
        } else {
            Arc::clone(&a)
        };
        let name = users[i].clone();
        tasks.push(tokio::spawn(async move {
            let r = svc
                .execute(
                    Command::Kick {
                        channel: c("pub"),
                        user: u(&name),
                    },
                    &user("adm"),
                )
                .await;
            ("kick", name, r)
        }));
    }
    let mut joined = BTreeSet::new();
    let mut kicked = BTreeSet::new();
    let mut last_seq = 0;
    for t in tasks {
        let (what, name, result) = t.await.unwrap();
        match result {
            Ok(out) => {
                last_seq = last_seq.max(out.seq);
                if what == "join" {
                    joined.insert(name);
                } else {
                    kicked.insert(name);
                }
            }
            // A kick that ran before the join: a clear refusal.
            Err(e) if what == "kick" && e.code() == "not_a_member" => {}
            Err(e) => panic!("{what} {name}: unexpected {} ({e})", e.code()),
        }
    }
    // Every join succeeds (retried through conflicts); a kick succeeds
    // exactly when it came after its user's join.
    assert_eq!(joined.len(), 10, "{joined:?}");

    eprintln!("conflicts retried: {} + {}", a.conflicts(), b.conflicts());
    // The log replays cleanly, and everyone agrees on the result.
    let events = a.store().load(&room("channel:pub")).await.unwrap();
    let members = replay_checked(&events);
    let mut expected: BTreeSet<UserId> = [u("adm"), u("bob")].into();
    for name in &users {
        if !kicked.contains(name) {
            expected.insert(u(name));
        }
    }
    assert_eq!(members, expected);
    a.read_model()
        .wait_for(last_seq, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let projected: BTreeSet<UserId> = a
        .members_of(&room("channel:pub"))
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(projected, expected);
    let fresh = MembershipService::new(
        Arc::clone(a.store()),
        Arc::clone(a.read_model()),
        Arc::clone(a.bus()),
    );
    let (state, version) = fresh.state(&room("channel:pub")).await.unwrap();
    let AggregateState::Channel(ch) = state else {
        panic!("not a channel")
    };
    assert_eq!(ch.members.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(version, events.last().unwrap().seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_joins_all_land() {
    let server = NatsServer::start();
    let (bus, running) = bootstrapped(&server).await;
    let a = Arc::clone(&running.service);
    let b = Arc::new(another_instance(&bus, &a).await);
    let names = add_members(&a, "j", 20).await;
    let tasks: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let svc = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            let name = name.clone();
            tokio::spawn(async move {
                svc.execute(Command::JoinChannel { channel: c("pub") }, &user(&name))
                    .await
            })
        })
        .collect();
    for t in tasks {
        let out = t.await.unwrap().expect("join failed");
        assert!(out.seq > 0);
    }
    let events = a.store().load(&room("channel:pub")).await.unwrap();
    let members = replay_checked(&events);
    assert_eq!(members.len(), 22);
    eprintln!("conflicts retried: {} + {}", a.conflicts(), b.conflicts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_instances_racing_retry_or_answer_conflict() {
    let joined = race(8).await;
    assert!(joined >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_retries_one_wins_and_the_rest_hear_conflict() {
    assert_eq!(race(1).await, 1);
}

/// Twenty instances join twenty users to one channel at once, each trying
/// `max_attempts` times; returns how many joined.
async fn race(max_attempts: u32) -> usize {
    let server = NatsServer::start();
    let (bus, running) = bootstrapped(&server).await;
    let a = Arc::clone(&running.service);
    let names = add_members(&a, "r", 20).await;
    // Twenty instances, each with the channel cached at the same version:
    // every append but one conflicts in the first round.
    let mut instances = Vec::new();
    for _ in 0..20 {
        let svc = Arc::new(
            another_instance(&bus, &a)
                .await
                .with_settings(ServiceSettings {
                    max_attempts,
                    ..ServiceSettings::default()
                }),
        );
        svc.state(&room("channel:pub")).await.unwrap();
        instances.push(svc);
    }
    let tasks: Vec<_> = names
        .iter()
        .zip(&instances)
        .map(|(name, svc)| {
            let svc = Arc::clone(svc);
            let name = name.clone();
            tokio::spawn(async move {
                let r = svc
                    .execute(Command::JoinChannel { channel: c("pub") }, &user(&name))
                    .await;
                (name, r)
            })
        })
        .collect();
    let mut expected: BTreeSet<UserId> = [u("adm"), u("bob")].into();
    for t in tasks {
        let (name, r) = t.await.unwrap();
        match r {
            Ok(_) => {
                expected.insert(u(&name));
            }
            Err(e) => {
                assert_eq!(e.code(), "conflict", "{name}: {e}");
                assert!(e.to_string().contains("retry"), "{e}");
            }
        }
    }
    let conflicts: u64 = instances.iter().map(|s| s.conflicts()).sum();
    assert!(conflicts >= 19, "only {conflicts} conflicts");
    eprintln!(
        "conflicts retried: {conflicts}; joined: {}",
        expected.len() - 2
    );
    let events = a.store().load(&room("channel:pub")).await.unwrap();
    assert_eq!(replay_checked(&events), expected);
    expected.len() - 2
}
