//! The command rules, as a table: who may do what to which state, and the
//! stable error code of every refusal.

use std::collections::HashMap;

use confab_events::membership::{JoinedVia, LeftBecause, MembershipEvent, Role, Visibility};
use confab_events::{ChannelId, DmId, RoomId, UserId, WorkspaceId};
use confab_membership::domain::{Actor, AggregateState, Command, Facts, decide};

fn u(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}
fn w(s: &str) -> WorkspaceId {
    WorkspaceId::parse(s).unwrap()
}
fn c(s: &str) -> ChannelId {
    ChannelId::parse(s).unwrap()
}
fn d(s: &str) -> DmId {
    DmId::parse(s).unwrap()
}

/// Workspace `w`: owner `owner`, admin `adm`, members `mem`, `bob`, `carol`
/// (`out` belongs nowhere). Channels: `pub` (public, by `mem`, with `bob`),
/// `priv` (private, by `adm`), `arch` (public, archived). DMs: `d2` (`mem`,
/// `bob`) and the group DM `g3` (`mem`, `bob`, `carol`).
fn world() -> HashMap<RoomId, AggregateState> {
    use MembershipEvent::*;
    let events = vec![
        WorkspaceCreated {
            workspace: w("w"),
            name: "W".into(),
            owner: u("owner"),
        },
        WorkspaceMemberAdded {
            workspace: w("w"),
            user: u("adm"),
            role: Role::Admin,
        },
        WorkspaceMemberAdded {
            workspace: w("w"),
            user: u("mem"),
            role: Role::Member,
        },
        WorkspaceMemberAdded {
            workspace: w("w"),
            user: u("bob"),
            role: Role::Member,
        },
        WorkspaceMemberAdded {
            workspace: w("w"),
            user: u("carol"),
            role: Role::Member,
        },
        ChannelCreated {
            channel: c("pub"),
            workspace: w("w"),
            name: "public".into(),
            visibility: Visibility::Public,
            created_by: u("mem"),
        },
        ChannelMemberJoined {
            channel: c("pub"),
            user: u("bob"),
            via: JoinedVia::Joined,
        },
        ChannelCreated {
            channel: c("priv"),
            workspace: w("w"),
            name: "private".into(),
            visibility: Visibility::Private,
            created_by: u("adm"),
        },
        ChannelCreated {
            channel: c("arch"),
            workspace: w("w"),
            name: "old".into(),
            visibility: Visibility::Public,
            created_by: u("mem"),
        },
        ChannelArchived {
            channel: c("arch"),
            by: u("mem"),
        },
        DmOpened {
            dm: d("d2"),
            workspace: w("w"),
            participants: vec![u("bob"), u("mem")],
            opened_by: u("mem"),
        },
        DmOpened {
            dm: d("g3"),
            workspace: w("w"),
            participants: vec![u("bob"), u("carol"), u("mem")],
            opened_by: u("mem"),
        },
    ];
    let mut states: HashMap<RoomId, AggregateState> = HashMap::new();
    for e in &events {
        states.entry(e.aggregate()).or_default().apply(e);
    }
    states
}

/// Decides `cmd` against the world, the way the service assembles facts.
fn run(
    world: &HashMap<RoomId, AggregateState>,
    actor: &Actor,
    cmd: &Command,
) -> Result<MembershipEvent, String> {
    let empty = AggregateState::Empty;
    let target = world.get(&cmd.aggregate()).unwrap_or(&empty);
    let ws_id = cmd.workspace_hint().or(target.workspace_id()).cloned();
    let workspace = ws_id
        .and_then(|id| world.get(&RoomId::workspace(&id)))
        .and_then(|s| match s {
            AggregateState::Workspace(ws) => Some(ws),
            _ => None,
        });
    decide(&Facts { target, workspace }, cmd, actor).map_err(|e| e.code().to_owned())
}

fn user(s: &str) -> Actor {
    Actor::User(u(s))
}
fn service(s: Option<&str>) -> Actor {
    Actor::Service {
        on_behalf_of: s.map(u),
    }
}

#[test]
fn the_rules_table() {
    use Command::*;
    let world = world();
    let create_ws = |id: &str, owner: &str| CreateWorkspace {
        id: w(id),
        name: "New".into(),
        owner: u(owner),
    };
    let add = |user: &str, role: Role| AddWorkspaceMember {
        workspace: w("w"),
        user: u(user),
        role,
    };
    let remove = |user: &str| RemoveWorkspaceMember {
        workspace: w("w"),
        user: u(user),
    };
    let create_ch = |id: &str, ws: &str| CreateChannel {
        channel: c(id),
        workspace: w(ws),
        name: "general".into(),
        visibility: Visibility::Public,
    };
    let join = |ch: &str| JoinChannel { channel: c(ch) };
    let leave = |ch: &str| LeaveChannel { channel: c(ch) };
    let invite = |ch: &str, user: &str| Invite {
        channel: c(ch),
        user: u(user),
    };
    let kick = |ch: &str, user: &str| Kick {
        channel: c(ch),
        user: u(user),
    };
    let archive = |ch: &str| ArchiveChannel { channel: c(ch) };
    let open = |id: &str, ws: &str, ps: &[&str]| OpenDm {
        dm: d(id),
        workspace: w(ws),
        participants: ps.iter().map(|p| u(p)).collect(),
    };
    let add_p = |dm: &str, user: &str| AddDmParticipant {
        dm: d(dm),
        user: u(user),
    };

    // (actor, command, expected event type or error code)
    let cases: Vec<(Actor, Command, &str)> = vec![
        // Workspaces: ids unique; users create their own; the service bootstraps.
        (
            user("alice"),
            create_ws("new", "alice"),
            "workspace.created",
        ),
        (user("alice"), create_ws("new", "bob"), "forbidden"),
        (service(None), create_ws("new", "bob"), "workspace.created"),
        (user("owner"), create_ws("w", "owner"), "already_exists"),
        (service(None), create_ws("w", "owner"), "already_exists"),
        (
            user("alice"),
            CreateWorkspace {
                id: w("new"),
                name: "  ".into(),
                owner: u("alice"),
            },
            "invalid",
        ),
        (
            user("alice"),
            CreateWorkspace {
                id: w("new"),
                name: "x".repeat(81),
                owner: u("alice"),
            },
            "invalid",
        ),
        // Members: owners and admins (and the service) add and remove.
        (
            user("adm"),
            add("out", Role::Member),
            "workspace.member_added",
        ),
        (
            user("owner"),
            add("out", Role::Admin),
            "workspace.member_added",
        ),
        (user("mem"), add("out", Role::Member), "forbidden"),
        (user("out"), add("out", Role::Member), "forbidden"),
        (
            service(None),
            add("out", Role::Member),
            "workspace.member_added",
        ),
        (user("adm"), add("bob", Role::Member), "already_exists"),
        (user("adm"), add("out", Role::Owner), "invalid"),
        (
            user("adm"),
            AddWorkspaceMember {
                workspace: w("nope"),
                user: u("out"),
                role: Role::Member,
            },
            "not_found",
        ),
        (user("adm"), remove("bob"), "workspace.member_removed"),
        (user("mem"), remove("bob"), "forbidden"),
        (user("bob"), remove("bob"), "workspace.member_removed"),
        (user("adm"), remove("owner"), "forbidden"),
        (service(None), remove("owner"), "forbidden"),
        (user("adm"), remove("out"), "not_a_member"),
        (service(None), remove("bob"), "workspace.member_removed"),
        // Channels: created by workspace members.
        (user("mem"), create_ch("c", "w"), "channel.created"),
        (user("out"), create_ch("c", "w"), "not_a_member"),
        (user("mem"), create_ch("pub", "w"), "already_exists"),
        (user("mem"), create_ch("c", "nope"), "not_found"),
        (service(None), create_ch("c", "w"), "invalid"),
        (service(Some("mem")), create_ch("c", "w"), "channel.created"),
        (service(Some("out")), create_ch("c", "w"), "not_a_member"),
        // Joining: public channels, workspace members, not archived.
        (user("carol"), join("pub"), "channel.member_joined"),
        (user("bob"), join("pub"), "already_exists"),
        (user("out"), join("pub"), "not_a_member"),
        (user("carol"), join("priv"), "forbidden"),
        (service(Some("carol")), join("priv"), "forbidden"),
        (user("carol"), join("arch"), "archived"),
        (user("carol"), join("nope"), "not_found"),
        (service(Some("carol")), join("pub"), "channel.member_joined"),
        (service(None), join("pub"), "invalid"),
        // Leaving: members only.
        (user("bob"), leave("pub"), "channel.member_left"),
        (user("carol"), leave("pub"), "not_a_member"),
        (user("mem"), leave("arch"), "channel.member_left"),
        // Inviting: by a channel member, of a workspace member.
        (
            user("adm"),
            invite("priv", "carol"),
            "channel.member_joined",
        ),
        (user("mem"), invite("priv", "carol"), "forbidden"),
        (user("adm"), invite("priv", "out"), "not_a_member"),
        (user("mem"), invite("pub", "bob"), "already_exists"),
        (user("mem"), invite("arch", "carol"), "archived"),
        (user("bob"), invite("pub", "carol"), "channel.member_joined"),
        (
            service(Some("mem")),
            invite("priv", "carol"),
            "channel.member_joined",
        ),
        (service(None), invite("priv", "carol"), "invalid"),
        // Kicking: workspace owners and admins.
        (user("adm"), kick("pub", "bob"), "channel.member_left"),
        (user("owner"), kick("pub", "mem"), "channel.member_left"),
        (user("mem"), kick("pub", "bob"), "forbidden"),
        (user("adm"), kick("pub", "carol"), "not_a_member"),
        (user("adm"), kick("priv", "adm"), "invalid"),
        (
            service(Some("zed")),
            kick("pub", "bob"),
            "channel.member_left",
        ),
        // Archiving: the creator, owners and admins; once.
        (user("mem"), archive("pub"), "channel.archived"),
        (user("adm"), archive("pub"), "channel.archived"),
        (user("bob"), archive("pub"), "forbidden"),
        (user("adm"), archive("arch"), "archived"),
        (user("adm"), archive("nope"), "not_found"),
        // DMs: workspace members only; 2 = DM, 3+ = group DM.
        (user("mem"), open("n", "w", &["bob"]), "dm.opened"),
        (user("mem"), open("n", "w", &["bob", "carol"]), "dm.opened"),
        (user("mem"), open("n", "w", &[]), "invalid"),
        (user("mem"), open("n", "w", &["mem"]), "invalid"),
        (user("mem"), open("n", "w", &["out"]), "not_a_member"),
        (user("out"), open("n", "w", &["bob"]), "not_a_member"),
        (user("mem"), open("d2", "w", &["bob"]), "already_exists"),
        (user("mem"), open("n", "nope", &["bob"]), "not_found"),
        (service(None), open("n", "w", &["bob", "mem"]), "invalid"),
        // Adding participants: group DMs only, by a participant.
        (user("mem"), add_p("g3", "adm"), "dm.participant_added"),
        (user("mem"), add_p("d2", "adm"), "invalid"),
        (user("adm"), add_p("g3", "owner"), "forbidden"),
        (user("mem"), add_p("g3", "bob"), "already_exists"),
        (user("mem"), add_p("g3", "out"), "not_a_member"),
        (user("mem"), add_p("nope", "adm"), "not_found"),
        (
            service(Some("zed")),
            add_p("g3", "adm"),
            "dm.participant_added",
        ),
    ];

    let mut failures = Vec::new();
    for (actor, cmd, expected) in &cases {
        let got = match run(&world, actor, cmd) {
            Ok(event) => {
                assert_eq!(event.aggregate(), cmd.aggregate(), "{cmd:?}");
                event.type_name().to_owned()
            }
            Err(code) => code,
        };
        if got != *expected {
            failures.push(format!("{actor:?} {cmd:?}: expected {expected}, got {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn events_record_who_and_how() {
    let world = world();
    let e = run(
        &world,
        &user("adm"),
        &Command::Invite {
            channel: c("priv"),
            user: u("carol"),
        },
    )
    .unwrap();
    assert_eq!(
        e,
        MembershipEvent::ChannelMemberJoined {
            channel: c("priv"),
            user: u("carol"),
            via: JoinedVia::Invited { by: u("adm") },
        }
    );
    let e = run(
        &world,
        &user("adm"),
        &Command::Kick {
            channel: c("pub"),
            user: u("bob"),
        },
    )
    .unwrap();
    assert_eq!(
        e,
        MembershipEvent::ChannelMemberLeft {
            channel: c("pub"),
            user: u("bob"),
            because: LeftBecause::Kicked { by: u("adm") },
        }
    );
    // The opener is a participant whether listed or not; participants are
    // de-duplicated and sorted.
    let e = run(
        &world,
        &user("mem"),
        &Command::OpenDm {
            dm: d("n"),
            workspace: w("w"),
            participants: vec![u("carol"), u("bob"), u("carol")],
        },
    )
    .unwrap();
    assert_eq!(
        e,
        MembershipEvent::DmOpened {
            dm: d("n"),
            workspace: w("w"),
            participants: vec![u("bob"), u("carol"), u("mem")],
            opened_by: u("mem"),
        }
    );
    // Names are trimmed.
    let e = run(
        &world,
        &user("mem"),
        &Command::CreateChannel {
            channel: c("c"),
            workspace: w("w"),
            name: "  random ".into(),
            visibility: Visibility::Private,
        },
    )
    .unwrap();
    assert!(matches!(e, MembershipEvent::ChannelCreated { name, .. } if name == "random"));
}

#[test]
fn refusals_explain_themselves() {
    let world = world();
    let err = decide(
        &Facts {
            target: &world[&RoomId::channel(&c("priv"))],
            workspace: match &world[&RoomId::workspace(&w("w"))] {
                AggregateState::Workspace(ws) => Some(ws),
                _ => None,
            },
        },
        &Command::JoinChannel { channel: c("priv") },
        &user("carol"),
    )
    .unwrap_err();
    assert_eq!(err.code(), "forbidden");
    assert!(err.to_string().contains("private"), "{err}");
    let err = run(
        &world,
        &service(None),
        &Command::JoinChannel { channel: c("pub") },
    )
    .unwrap_err();
    assert_eq!(err, "invalid");
}
