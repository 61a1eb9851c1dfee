//! Several copies of one source entry (supervisord `numprocs`, pm2
//! `instances`, process-compose `replicas`, compose `deploy.replicas` or
//! `scale`) become one service with `replicas: N`, whose instances Kepler
//! names `web.1` … `web.N`. What the source tool varies per copy (a process
//! number in the command, `NODE_APP_INSTANCE`, `PC_REPLICA_NUM`) is computed
//! at run time from `KEPLER_REPLICA`, which counts from 1.

use super::model::Service;
use super::report::{Loc, Report};

/// The most instances a Kepler service runs.
pub const MAX_REPLICAS: u32 = 1024;

/// `service` run as `count` copies. One copy stays a plain service (no
/// `replicas:`, named as the entry); more than Kepler allows are cut down,
/// with a note.
pub fn replicated(
    mut service: Service,
    count: u32,
    what: &str,
    at: &Loc,
    report: &mut Report,
) -> Service {
    if count == 1 {
        return service;
    }
    let mut count = count;
    if count > MAX_REPLICAS {
        report.note(
            Some(at.clone()),
            format!("{what} asks for {count} copies; a Kepler service runs at most {MAX_REPLICAS}, so it has replicas: {MAX_REPLICAS}"),
        );
        count = MAX_REPLICAS;
    }
    service.replicas = Some(count);
    service
}

/// `command` run with `vars` set first, each to a shell expression (e.g.
/// `$((KEPLER_REPLICA - 1))`): `sh -c 'export A=…; exec "$@"' sh argv…`, so
/// the original words reach the program exactly as written.
pub fn with_replica_vars(command: Vec<String>, vars: &[(String, String)]) -> Vec<String> {
    if vars.is_empty() {
        return command;
    }
    let exports: Vec<String> = vars
        .iter()
        .map(|(name, value)| format!("export {name}={value}"))
        .collect();
    let mut argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        format!("{}; exec \"$@\"", exports.join("; ")),
        "sh".to_owned(),
    ];
    argv.extend(command);
    argv
}

/// `KEPLER_REPLICA` counted from `start` instead of 1, as a shell
/// expression: the copy numbers pm2 (`NODE_APP_INSTANCE`) and
/// process-compose (`PC_REPLICA_NUM`) count from 0.
pub fn replica_number_from(start: i64) -> String {
    match start - 1 {
        0 => "$KEPLER_REPLICA".to_owned(),
        offset if offset > 0 => format!("$((KEPLER_REPLICA + {offset}))"),
        offset => format!("$((KEPLER_REPLICA - {}))", -offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_stays_plain_and_more_become_replicas_within_the_limit() {
        let mut report = Report::default();
        let at = Loc::new(std::path::Path::new("Procfile"), 1);
        let one = replicated(Service::default(), 1, "x", &at, &mut report);
        assert_eq!(one.replicas, None);
        let three = replicated(Service::default(), 3, "x", &at, &mut report);
        assert_eq!(three.replicas, Some(3));
        let none = replicated(Service::default(), 0, "x", &at, &mut report);
        assert_eq!(none.replicas, Some(0));
        let many = replicated(Service::default(), 5000, "x", &at, &mut report);
        assert_eq!(many.replicas, Some(MAX_REPLICAS));
        assert!(report.to_string().contains("at most 1024"), "{report}");
    }

    #[test]
    fn replica_variables_wrap_the_command_without_requoting_it() {
        let argv = with_replica_vars(
            vec!["node".into(), "app.js".into(), "a b".into()],
            &[("NODE_APP_INSTANCE".into(), replica_number_from(0))],
        );
        assert_eq!(
            argv,
            [
                "sh",
                "-c",
                "export NODE_APP_INSTANCE=$((KEPLER_REPLICA - 1)); exec \"$@\"",
                "sh",
                "node",
                "app.js",
                "a b"
            ]
        );
        assert_eq!(replica_number_from(1), "$KEPLER_REPLICA");
        assert_eq!(replica_number_from(8000), "$((KEPLER_REPLICA + 7999))");
        assert_eq!(with_replica_vars(vec!["x".into()], &[]), ["x"]);
    }
}
