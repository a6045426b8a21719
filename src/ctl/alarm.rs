//! `alarm list|disarm`: the cluster's alarms (a NOSPACE alarm stops writes until it is disarmed).
//!
//! `alarm disarm` is clientv3's `AlarmDisarm` with an empty member: it lists the alarms, then
//! deactivates each one, and prints those it deactivated. etcd answers Alarm without a header,
//! and etcdctl 3.4.23's fields printer reads the header first: `-w fields` panics on every real
//! server, after the request took effect. cairnctl reproduces the panic and its status 2 (and
//! prints the fields for a server that does send a header).

use std::io::Write;

use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType,
};

use super::client::{self, Client, Retry};
use super::commands::{call, client_config, failed, open_client};
use super::flags::Flags;
use super::json::Obj;
use super::printer::{fields_header, header_json, out, protobuf, unsupported, Format, Printer};
use super::txn_parse::PanicSite;
use super::{Console, Fail, EXIT_BAD_ARGS};

/// Which alarm command prints (the panic trace names its function).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    List,
    Disarm,
}

async fn alarm_call(
    c: &mut Client,
    err: &mut dyn Write,
    deadline: std::time::Instant,
    req: AlarmRequest,
) -> Result<AlarmResponse, Fail> {
    call(
        c,
        err,
        Some(deadline),
        Retry::Repeatable,
        &req,
        |ch, r| async move {
            MaintenanceClient::new(ch)
                .max_decoding_message_size(client::recv_limit())
                .alarm(r)
                .await
        },
    )
    .await
    .map_err(failed)
}

fn list_request() -> AlarmRequest {
    AlarmRequest {
        action: AlarmAction::Get as i32,
        member_id: 0,
        alarm: AlarmType::None as i32,
    }
}

/// etcdctl's refusal of arguments to a command that takes none.
fn no_arguments(args: &[String], command: &str) -> Result<(), Fail> {
    if args.is_empty() {
        return Ok(());
    }
    Err(Fail::Error(
        EXIT_BAD_ARGS,
        format!("{command} command accepts no arguments"),
    ))
}

pub async fn list(
    mut flags: Flags,
    args: Vec<String>,
    argc: usize,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    no_arguments(&args, "alarm list")?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    let resp = alarm_call(&mut c, io.err, cfg.deadline(), list_request()).await?;
    print(&cfg.printer, io.out, Which::List, argc, &resp)
}

pub async fn disarm(
    mut flags: Flags,
    args: Vec<String>,
    argc: usize,
    inherited: &[&'static str],
    env: &[(String, String)],
    io: &mut Console<'_>,
) -> Result<(), Fail> {
    no_arguments(&args, "alarm disarm")?;
    let cfg = client_config(&mut flags, inherited, env, io)?;
    let mut c = open_client(&cfg, io.err).await?;
    let deadline = cfg.deadline();
    let listed = alarm_call(&mut c, io.err, deadline, list_request()).await?;
    // clientv3 answers with what the deactivations answered, under no header.
    let mut disarmed = AlarmResponse::default();
    for m in &listed.alarms {
        let req = AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: m.member_id,
            alarm: m.alarm,
        };
        let resp = alarm_call(&mut c, io.err, deadline, req).await?;
        disarmed.alarms.extend(resp.alarms);
    }
    print(&cfg.printer, io.out, Which::Disarm, argc, &disarmed)
}

/// Go's `%v` of an alarm type: its name, or the number for one this version does not know.
fn alarm_name(alarm: i32) -> String {
    AlarmType::try_from(alarm)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| alarm.to_string())
}

fn alarm_json(m: &AlarmMember) -> String {
    Obj::new()
        .uint("memberID", m.member_id)
        .int("alarm", i64::from(m.alarm))
        .finish()
}

/// etcdctl's `Alarm` printers. `argc` is how many arguments cobra handed the command (the
/// fields printer's panic trace shows it).
pub fn print(
    p: &Printer,
    w: &mut dyn Write,
    which: Which,
    argc: usize,
    r: &AlarmResponse,
) -> Result<(), Fail> {
    match p.format {
        Format::Simple => {
            for m in &r.alarms {
                out(
                    w,
                    &format!("memberID:{} alarm:{} \n", m.member_id, alarm_name(m.alarm)),
                );
            }
        }
        Format::Json => {
            let alarms: Vec<String> = r.alarms.iter().map(alarm_json).collect();
            out(
                w,
                &format!(
                    "{}\n",
                    Obj::new()
                        .opt("header", header_json(&r.header))
                        .list("alarms", &alarms)
                        .finish()
                ),
            );
        }
        Format::Fields => {
            if r.header.is_none() {
                return Err(Fail::Panic(PanicSite::AlarmFieldsPrinter {
                    disarm: which == Which::Disarm,
                    args: argc,
                }));
            }
            let mut s = fields_header(&r.header);
            for m in &r.alarms {
                s.push_str(&format!(
                    "\"MemberID\" : {}\n\"AlarmType\" : {}\n\n",
                    m.member_id,
                    alarm_name(m.alarm)
                ));
            }
            out(w, &s);
        }
        Format::Protobuf => protobuf(w, r),
        Format::Table => return Err(unsupported(p.format)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::etcdserverpb::ResponseHeader;

    fn nospace(member_id: u64) -> AlarmMember {
        AlarmMember {
            member_id,
            alarm: AlarmType::Nospace as i32,
        }
    }

    fn printed(format: Format, which: Which, r: &AlarmResponse) -> Result<Vec<u8>, Fail> {
        let p = Printer {
            format,
            hex: false,
            value_only: false,
        };
        let mut w = Vec::new();
        print(&p, &mut w, which, 3, r)?;
        Ok(w)
    }

    fn text(r: Result<Vec<u8>, Fail>) -> String {
        String::from_utf8(r.unwrap_or_else(|f| panic!("{f:?}"))).unwrap()
    }

    #[test]
    fn alarm_output_matches_etcdctl() {
        // Captured from etcdctl 3.4.23 against etcd with one NOSPACE alarm raised.
        let one = AlarmResponse {
            header: None,
            alarms: vec![nospace(3542974012341521924)],
        };
        assert_eq!(
            text(printed(Format::Simple, Which::List, &one)),
            "memberID:3542974012341521924 alarm:NOSPACE \n"
        );
        assert_eq!(
            text(printed(Format::Json, Which::List, &one)),
            "{\"alarms\":[{\"memberID\":3542974012341521924,\"alarm\":1}]}\n"
        );
        let none = AlarmResponse::default();
        assert_eq!(text(printed(Format::Json, Which::Disarm, &none)), "{}\n");
        assert_eq!(text(printed(Format::Simple, Which::Disarm, &none)), "");
        assert_eq!(
            printed(Format::Protobuf, Which::List, &one).unwrap(),
            [0x12, 0x0c, 0x08, 0x84, 0x9c, 0xba, 0xf0, 0xfb, 0x82, 0xcb, 0x95, 0x31, 0x10, 0x01]
        );
        assert!(printed(Format::Protobuf, Which::Disarm, &none)
            .unwrap()
            .is_empty());
        assert!(matches!(
            printed(Format::Table, Which::List, &one),
            Err(Fail::Error(4, _))
        ));
        assert!(matches!(
            printed(Format::Fields, Which::Disarm, &none),
            Err(Fail::Panic(PanicSite::AlarmFieldsPrinter {
                disarm: true,
                args: 3
            }))
        ));
        let with_header = AlarmResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 4,
            }),
            alarms: vec![nospace(7)],
        };
        assert_eq!(
            text(printed(Format::Fields, Which::List, &with_header)),
            "\"ClusterID\" : 1\n\"MemberID\" : 2\n\"Revision\" : 3\n\"RaftTerm\" : 4\n\"MemberID\" : 7\n\"AlarmType\" : NOSPACE\n\n"
        );
    }
}
