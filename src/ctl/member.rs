//! `member list|add|remove|update|promote` and `move-leader`: the cluster's membership and its
//! leadership, with etcdctl's checks, requests and output in every format.
//!
//! Two details of etcdctl show here. A format that has no printer for a response fails only
//! when the response is printed, after the request took effect: `member remove <id> -w fields`
//! removes the member, then exits 4 with `fields not supported as output format`. And `member
//! add` in the simple format follows its one-line answer with the environment a new member
//! needs to join (`ETCD_NAME`, `ETCD_INITIAL_CLUSTER`, ...), every value quoted with Go's `%q`.
//!
//! `member promote` in any format but simple promotes the member and then panics in etcdctl
//! 3.4.23 (its printers lack `MemberPromote`); cairnctl reproduces the panic and its status 2.

use std::io::Write;

use crate::proto::etcdserverpb::cluster_client::ClusterClient;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest, MoveLeaderRequest,
    MoveLeaderResponse, ResponseHeader, StatusRequest,
};

use super::client::{self, Client, Retry, TargetStyle};
use super::commands::{authenticate, call, client_config, failed, open_client, Config};
use super::flags::{Def, Flags, Kind};
use super::json::{self, Obj};
use super::printer::{fields_header, header_json, out, protobuf, unsupported, Format, Printer};
use super::txn_parse::PanicSite;
use super::{go_url, gofmt, table, Console, Fail, EXIT_BAD_ARGS, EXIT_ERROR};

/// `--peer-urls` of `member add` and `member update`.
pub const PEER_URLS: Def = Def {
    name: "peer-urls",
    short: None,
    kind: Kind::Str,
    default: "",
};

fn bad_args(message: impl Into<String>) -> Fail {
    Fail::Error(EXIT_BAD_ARGS, message.into())
}

/// The member ID argument of `remove`, `update` and `promote`, in hex.
fn member_id(args: &[String]) -> Result<u64, Fail> {
    if args.len() != 1 {
        return Err(bad_args("member ID is not provided"));
    }
    gofmt::parse_uint(&args[0], 16)
        .map_err(|e| bad_args(format!("bad member ID arg ({e}), expecting ID in Hex")))
}

/// The `--peer-urls` list, split on commas as etcdctl does (empty items stay).
fn peer_urls(flags: &Flags) -> Result<Vec<String>, Fail> {
    let raw = flags.str(PEER_URLS.name);
    if raw.is_empty() {
        return Err(bad_args("member peer urls not provided"));
    }
    Ok(raw.split(',').map(str::to_string).collect())
}

pub async fn list(
    mut flags: Flags,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    let req = MemberListRequest::default();
    let resp = call(
        &mut c,
        io.err,
        Some(cfg.deadline()),
        Retry::Repeatable,
        &req,
        |ch, r| async move {
            ClusterClient::new(ch)
                .max_decoding_message_size(client::recv_limit())
                .member_list(r)
                .await
        },
    )
    .await
    .map_err(failed)?;
    print_list(&cfg.printer, io.out, &resp)
}

pub async fn add(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    if args.is_empty() {
        return Err(bad_args("member name not provided"));
    }
    if args.len() > 1 {
        let mut message = String::from("too many arguments");
        for a in args.iter().filter(|a| a.to_lowercase().starts_with("http")) {
            message.push_str(&format!(", did you mean --peer-urls={a}"));
        }
        return Err(bad_args(message));
    }
    let name = args[0].clone();
    let urls = peer_urls(&flags)?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    go_url::check_urls(&urls).map_err(|e| Fail::Error(EXIT_ERROR, e))?;
    let req = MemberAddRequest {
        peer_ur_ls: urls,
        is_learner: flags.bool("learner"),
    };
    let resp = call(
        &mut c,
        io.err,
        Some(cfg.deadline()),
        Retry::NonRepeatable,
        &req,
        |ch, r| async move {
            ClusterClient::new(ch)
                .max_decoding_message_size(client::recv_limit())
                .member_add(r)
                .await
        },
    )
    .await
    .map_err(failed)?;
    print_add(&cfg.printer, io.out, &resp)?;
    if cfg.printer.format == Format::Simple {
        let _ = io
            .out
            .write_all(join_environment(&name, &flags.str(PEER_URLS.name), &resp).as_bytes());
    }
    Ok(())
}

/// The lines `member add` prints for the new member's configuration.
fn join_environment(name: &str, peer_urls_flag: &str, resp: &MemberAddResponse) -> String {
    let new_id = resp.member.as_ref().map_or(0, |m| m.id);
    let mut conf = Vec::new();
    for m in &resp.members {
        for u in &m.peer_ur_ls {
            let n = if m.id == new_id { name } else { &m.name };
            conf.push(format!("{n}={u}"));
        }
    }
    format!(
        "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n",
        gofmt::quote(name.as_bytes()),
        gofmt::quote(conf.join(",").as_bytes()),
        gofmt::quote(peer_urls_flag.as_bytes()),
    )
}

pub async fn remove(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let id = member_id(&args)?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    let req = MemberRemoveRequest { id };
    let resp = call(
        &mut c,
        io.err,
        Some(cfg.deadline()),
        Retry::NonRepeatable,
        &req,
        |ch, r| async move {
            ClusterClient::new(ch)
                .max_decoding_message_size(client::recv_limit())
                .member_remove(r)
                .await
        },
    )
    .await
    .map_err(failed)?;
    print_change(
        &cfg.printer,
        io.out,
        Change::Removed,
        id,
        &resp.header,
        &resp.members,
    )
}

pub async fn update(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let id = member_id(&args)?;
    let urls = peer_urls(&flags)?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    go_url::check_urls(&urls).map_err(|e| Fail::Error(EXIT_ERROR, e))?;
    let req = MemberUpdateRequest {
        id,
        peer_ur_ls: urls,
    };
    let resp = call(
        &mut c,
        io.err,
        Some(cfg.deadline()),
        Retry::NonRepeatable,
        &req,
        |ch, r| async move {
            ClusterClient::new(ch)
                .max_decoding_message_size(client::recv_limit())
                .member_update(r)
                .await
        },
    )
    .await
    .map_err(failed)?;
    print_change(
        &cfg.printer,
        io.out,
        Change::Updated,
        id,
        &resp.header,
        &resp.members,
    )
}

pub async fn promote(
    mut flags: Flags,
    args: Vec<String>,
    argc: usize,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    let id = member_id(&args)?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    let req = MemberPromoteRequest { id };
    let resp = call(
        &mut c,
        io.err,
        Some(cfg.deadline()),
        Retry::NonRepeatable,
        &req,
        |ch, r| async move {
            ClusterClient::new(ch)
                .max_decoding_message_size(client::recv_limit())
                .member_promote(r)
                .await
        },
    )
    .await
    .map_err(failed)?;
    if cfg.printer.format != Format::Simple {
        // etcdctl 3.4.23 has no printer for a promotion but the simple one: it panics.
        return Err(Fail::Panic(PanicSite::MemberPromotePrinter { args: argc }));
    }
    print_change(
        &cfg.printer,
        io.out,
        Change::Promoted,
        id,
        &resp.header,
        &resp.members,
    )
}

/// etcdctl's `move-leader`: asks each endpoint for its status until one says it is the leader,
/// then sends `MoveLeader` to that one. One `--command-timeout` covers the whole search and the
/// transfer.
pub async fn move_leader(
    mut flags: Flags,
    args: Vec<String>,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    if args.len() != 1 {
        return Err(bad_args("move-leader command needs 1 argument"));
    }
    let target = gofmt::parse_uint(&args[0], 16).map_err(bad_args)?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    // etcdctl builds (and authenticates) a client over all endpoints only to read them back.
    open_client(&cfg, io.err).await?;
    let deadline = cfg.deadline();
    let mut leader: Option<(Client, u64)> = None;
    for ep in &cfg.endpoints {
        let single = Config {
            endpoints: vec![ep.clone()],
            ..cfg.clone()
        };
        let mut cli = open_client(&single, io.err).await?;
        // The status comes from a direct dial of the endpoint, with the client's token.
        let mut direct = Client::new(vec![ep.clone()], TargetStyle::Passthrough, &cfg.security);
        if let Err(e) = authenticate(&mut cli, io.err, &single).await {
            return Err(failed(e));
        }
        direct.set_token(cli.token());
        let status = call(
            &mut direct,
            io.err,
            Some(deadline),
            Retry::Repeatable,
            &StatusRequest {},
            |ch, r| async move {
                MaintenanceClient::new(ch)
                    .max_decoding_message_size(client::recv_limit())
                    .status(r)
                    .await
            },
        )
        .await
        .map_err(failed)?;
        let member = status.header.as_ref().map_or(0, |h| h.member_id);
        if member == status.leader {
            leader = Some((cli, status.leader));
            break;
        }
    }
    let Some((mut cli, leader_id)) = leader else {
        return Err(bad_args(format!(
            "no leader endpoint given at {}",
            gofmt::string_slice(&cfg.endpoints)
        )));
    };
    let req = MoveLeaderRequest { target_id: target };
    let resp = call(
        &mut cli,
        io.err,
        Some(deadline),
        Retry::Repeatable,
        &req,
        |ch, r| async move {
            MaintenanceClient::new(ch)
                .max_decoding_message_size(client::recv_limit())
                .move_leader(r)
                .await
        },
    )
    .await
    .map_err(failed)?;
    print_move_leader(&cfg.printer, io.out, leader_id, target, &resp)
}

fn member_json(m: &Member) -> String {
    let strings =
        |v: &[String]| -> Vec<String> { v.iter().map(|s| json::string(s.as_bytes())).collect() };
    Obj::new()
        .uint("ID", m.id)
        .str("name", &m.name)
        .list("peerURLs", &strings(&m.peer_ur_ls))
        .list("clientURLs", &strings(&m.client_ur_ls))
        .boolean("isLearner", m.is_learner)
        .finish()
}

fn members_json(members: &[Member]) -> Vec<String> {
    members.iter().map(member_json).collect()
}

const MEMBER_HEADER: [&str; 6] = [
    "ID",
    "Status",
    "Name",
    "Peer Addrs",
    "Client Addrs",
    "Is Learner",
];

/// etcdctl's `makeMemberListTable`: a member without a name has not started yet.
fn member_rows(members: &[Member]) -> Vec<Vec<String>> {
    members
        .iter()
        .map(|m| {
            vec![
                format!("{:x}", m.id),
                if m.name.is_empty() {
                    "unstarted"
                } else {
                    "started"
                }
                .to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect()
}

pub fn print_list(p: &Printer, w: &mut dyn Write, r: &MemberListResponse) -> Result<(), Fail> {
    match p.format {
        Format::Simple => {
            for row in member_rows(&r.members) {
                out(w, &format!("{}\n", row.join(", ")));
            }
        }
        Format::Json => {
            let json = Obj::new()
                .opt("header", header_json(&r.header))
                .list("members", &members_json(&r.members))
                .finish();
            out(w, &format!("{json}\n"));
        }
        Format::Fields => {
            let mut s = fields_header(&r.header);
            for m in &r.members {
                s.push_str(&format!("\"ID\" : {}\n", m.id));
                s.push_str(&format!("\"Name\" : {}\n", gofmt::quote(m.name.as_bytes())));
                for u in &m.peer_ur_ls {
                    s.push_str(&format!("\"PeerURL\" : {}\n", gofmt::quote(u.as_bytes())));
                }
                for u in &m.client_ur_ls {
                    s.push_str(&format!("\"ClientURL\" : {}\n", gofmt::quote(u.as_bytes())));
                }
                s.push_str(&format!("\"IsLearner\" : {}\n\n", m.is_learner));
            }
            out(w, &s);
        }
        Format::Table => out(w, &table::render(&MEMBER_HEADER, &member_rows(&r.members))),
        Format::Protobuf => protobuf(w, r),
    }
    Ok(())
}

fn cluster_id(h: &Option<ResponseHeader>) -> u64 {
    h.as_ref().map_or(0, |h| h.cluster_id)
}

pub fn print_add(p: &Printer, w: &mut dyn Write, r: &MemberAddResponse) -> Result<(), Fail> {
    match p.format {
        Format::Simple => out(
            w,
            &format!(
                "Member {:>16x} added to cluster {:>16x}\n",
                r.member.as_ref().map_or(0, |m| m.id),
                cluster_id(&r.header)
            ),
        ),
        Format::Json => {
            let json = Obj::new()
                .opt("header", header_json(&r.header))
                .opt("member", r.member.as_ref().map(member_json))
                .list("members", &members_json(&r.members))
                .finish();
            out(w, &format!("{json}\n"));
        }
        Format::Protobuf => protobuf(w, r),
        Format::Fields | Format::Table => return Err(unsupported(p.format)),
    }
    Ok(())
}

/// What `remove`, `update` and `promote` did; their responses share a shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Removed,
    Updated,
    Promoted,
}

pub fn print_change(
    p: &Printer,
    w: &mut dyn Write,
    change: Change,
    id: u64,
    header: &Option<ResponseHeader>,
    members: &[Member],
) -> Result<(), Fail> {
    match p.format {
        Format::Simple => {
            let what = match change {
                Change::Removed => "removed from",
                Change::Updated => "updated in",
                Change::Promoted => "promoted in",
            };
            out(
                w,
                &format!(
                    "Member {id:>16x} {what} cluster {:>16x}\n",
                    cluster_id(header)
                ),
            );
        }
        Format::Json => {
            let json = Obj::new()
                .opt("header", header_json(header))
                .list("members", &members_json(members))
                .finish();
            out(w, &format!("{json}\n"));
        }
        Format::Protobuf => {
            // The three responses are the same message on the wire: header = 1, members = 2.
            let msg = crate::proto::etcdserverpb::MemberRemoveResponse {
                header: *header,
                members: members.to_vec(),
            };
            protobuf(w, &msg);
        }
        Format::Fields | Format::Table => return Err(unsupported(p.format)),
    }
    Ok(())
}

pub fn print_move_leader(
    p: &Printer,
    w: &mut dyn Write,
    leader: u64,
    target: u64,
    r: &MoveLeaderResponse,
) -> Result<(), Fail> {
    match p.format {
        Format::Simple => out(
            w,
            &format!("Leadership transferred from {leader:x} to {target:x}\n"),
        ),
        Format::Json => out(
            w,
            &format!(
                "{}\n",
                Obj::new().opt("header", header_json(&r.header)).finish()
            ),
        ),
        Format::Protobuf => protobuf(w, r),
        Format::Fields | Format::Table => return Err(unsupported(p.format)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: 17544275952989560367,
            member_id: 17508013632121352914,
            revision: 0,
            raft_term: 2,
        })
    }

    fn member(id: u64, name: &str, peer: &[&str], client: &[&str], learner: bool) -> Member {
        Member {
            id,
            name: name.into(),
            peer_ur_ls: peer.iter().map(|s| s.to_string()).collect(),
            client_ur_ls: client.iter().map(|s| s.to_string()).collect(),
            is_learner: learner,
        }
    }

    fn members() -> Vec<Member> {
        vec![
            member(
                1859278217442209931,
                "c2",
                &["http://127.0.0.1:25802"],
                &["http://127.0.0.1:25792"],
                false,
            ),
            member(
                10035832194340861790,
                "",
                &["http://127.0.0.1:25896", "http://127.0.0.2:25896"],
                &[],
                true,
            ),
        ]
    }

    fn printer(format: Format) -> Printer {
        Printer {
            format,
            hex: false,
            value_only: false,
        }
    }

    fn print(f: impl FnOnce(&mut Vec<u8>) -> Result<(), Fail>) -> String {
        let mut w = Vec::new();
        f(&mut w).unwrap();
        String::from_utf8(w).unwrap()
    }

    // The expected strings were captured from etcdctl 3.4.23 against a 3-member etcd 3.4.23.

    #[test]
    fn member_list_formats() {
        let r = MemberListResponse {
            header: header(),
            members: members(),
        };
        assert_eq!(
            print(|w| print_list(&printer(Format::Simple), w, &r)),
            "19cd7bb01943b08b, started, c2, http://127.0.0.1:25802, http://127.0.0.1:25792, false\n\
             8b467035691db75e, unstarted, , http://127.0.0.1:25896,http://127.0.0.2:25896, , true\n"
        );
        assert_eq!(
            print(|w| print_list(&printer(Format::Json), w, &r)),
            "{\"header\":{\"cluster_id\":17544275952989560367,\"member_id\":17508013632121352914,\"raft_term\":2},\"members\":[{\"ID\":1859278217442209931,\"name\":\"c2\",\"peerURLs\":[\"http://127.0.0.1:25802\"],\"clientURLs\":[\"http://127.0.0.1:25792\"]},{\"ID\":10035832194340861790,\"peerURLs\":[\"http://127.0.0.1:25896\",\"http://127.0.0.2:25896\"],\"isLearner\":true}]}\n"
        );
        let single = MemberListResponse {
            header: Some(ResponseHeader {
                cluster_id: 1543700104741564242,
                member_id: 10608898954038455804,
                revision: 0,
                raft_term: 2,
            }),
            members: vec![member(
                10608898954038455804,
                "o1",
                &["http://127.0.0.1:25800"],
                &["http://127.0.0.1:25790"],
                false,
            )],
        };
        assert_eq!(
            print(|w| print_list(&printer(Format::Fields), w, &single)),
            "\"ClusterID\" : 1543700104741564242\n\"MemberID\" : 10608898954038455804\n\"Revision\" : 0\n\"RaftTerm\" : 2\n\"ID\" : 10608898954038455804\n\"Name\" : \"o1\"\n\"PeerURL\" : \"http://127.0.0.1:25800\"\n\"ClientURL\" : \"http://127.0.0.1:25790\"\n\"IsLearner\" : false\n\n"
        );
        assert_eq!(
            print(|w| print_list(&printer(Format::Table), w, &single)),
            "\
+------------------+---------+------+------------------------+------------------------+------------+
|        ID        | STATUS  | NAME |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+------------------+---------+------+------------------------+------------------------+------------+
| 933a6163ed79adfc | started |   o1 | http://127.0.0.1:25800 | http://127.0.0.1:25790 |      false |
+------------------+---------+------+------------------------+------------------------+------------+
"
        );
    }

    #[test]
    fn member_add_prints_the_join_environment() {
        let r = MemberAddResponse {
            header: header(),
            member: Some(member(
                10035832194340861790,
                "",
                &["http://127.0.0.1:25896", "http://127.0.0.2:25896"],
                &[],
                true,
            )),
            members: vec![
                member(
                    1859278217442209931,
                    "c2",
                    &["http://127.0.0.1:25802"],
                    &[],
                    false,
                ),
                member(
                    10035832194340861790,
                    "",
                    &["http://127.0.0.1:25896", "http://127.0.0.2:25896"],
                    &[],
                    true,
                ),
                member(
                    16223509718357637159,
                    "c3",
                    &["http://127.0.0.1:25803"],
                    &[],
                    false,
                ),
            ],
        };
        let mut s = print(|w| print_add(&printer(Format::Simple), w, &r));
        s.push_str(&join_environment(
            "lnsimple",
            "http://127.0.0.1:25896,http://127.0.0.2:25896",
            &r,
        ));
        assert_eq!(
            s,
            "Member 8b467035691db75e added to cluster f379ca06935ede2f\n\nETCD_NAME=\"lnsimple\"\nETCD_INITIAL_CLUSTER=\"c2=http://127.0.0.1:25802,lnsimple=http://127.0.0.1:25896,lnsimple=http://127.0.0.2:25896,c3=http://127.0.0.1:25803\"\nETCD_INITIAL_ADVERTISE_PEER_URLS=\"http://127.0.0.1:25896,http://127.0.0.2:25896\"\nETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"
        );
        // %16x pads with spaces: a member ID with a leading zero nibble.
        let short = MemberAddResponse {
            header: Some(ResponseHeader {
                cluster_id: 0x156c5310fedaaf52,
                ..Default::default()
            }),
            member: Some(member(0x6b58103836c0290, "", &[], &[], false)),
            members: vec![],
        };
        assert_eq!(
            print(|w| print_add(&printer(Format::Simple), w, &short)),
            "Member  6b58103836c0290 added to cluster 156c5310fedaaf52\n"
        );
        let mut w = Vec::new();
        assert!(matches!(
            print_add(&printer(Format::Fields), &mut w, &r),
            Err(Fail::Error(4, m)) if m == "fields not supported as output format"
        ));
    }

    #[test]
    fn member_change_and_move_leader_simple() {
        let h = header();
        assert_eq!(
            print(|w| print_change(
                &printer(Format::Simple),
                w,
                Change::Removed,
                0x8b467035691db75e,
                &h,
                &[]
            )),
            "Member 8b467035691db75e removed from cluster f379ca06935ede2f\n"
        );
        assert_eq!(
            print(|w| print_change(&printer(Format::Json), w, Change::Updated, 1, &h, &[])),
            "{\"header\":{\"cluster_id\":17544275952989560367,\"member_id\":17508013632121352914,\"raft_term\":2}}\n"
        );
        assert_eq!(
            print(|w| print_move_leader(
                &printer(Format::Simple),
                w,
                0xf2f8f5a3114a32d2,
                0x19cd7bb01943b08b,
                &MoveLeaderResponse::default()
            )),
            "Leadership transferred from f2f8f5a3114a32d2 to 19cd7bb01943b08b\n"
        );
    }

    #[test]
    fn argument_errors() {
        let args = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(
            matches!(member_id(&args(&[])), Err(Fail::Error(128, m)) if m == "member ID is not provided")
        );
        assert!(matches!(
            member_id(&args(&["zz"])),
            Err(Fail::Error(128, m)) if m == "bad member ID arg (strconv.ParseUint: parsing \"zz\": invalid syntax), expecting ID in Hex"
        ));
        assert_eq!(
            member_id(&args(&["8b467035691db75e"])).ok(),
            Some(0x8b467035691db75e)
        );
    }
}
