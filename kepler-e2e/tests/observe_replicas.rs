//! Replicated services in `top`, `inspect` and `stats`: each instance is a
//! row of its own, while the usage history keeps one column per service
//! (the sum of its instances), so `kepler scale` does not start it afresh.

use kepler_e2e::{wait_until, Kepler, DEADLINE};
use serde_json::Value;

const REPLICATED: &str = r#"
kepler:
  metrics:
    interval: 100ms
services:
  web:
    command: ["sleep", "1000"]
    replicas: 2
  solo:
    command: ["sleep", "1000"]
"#;

/// Each process holds 50 MiB it has written to, so memory adds up visibly.
const HEAVY: &str = r#"
kepler:
  metrics:
    interval: 100ms
services:
  web:
    command: ["python3", "-c", "import time; x = b'x' * (50 << 20); time.sleep(1000)"]
    replicas: 2
  solo:
    command: ["python3", "-c", "import time; x = b'x' * (50 << 20); time.sleep(1000)"]
"#;

fn json(kepler: &Kepler, args: &[&str]) -> Value {
    let run = kepler.kepler(args);
    run.success();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}\n{run}"))
}

fn stats_of(stats: &Value, name: &str) -> Value {
    stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
        .clone()
}

/// The `top --once` row of `name`, if it shows CPU and memory.
fn sampled_row<'a>(frame: &'a str, name: &str) -> Option<&'a str> {
    frame
        .lines()
        .find(|line| line.split_whitespace().any(|word| word == name))
        .filter(|line| line.contains('%') && line.contains("running"))
}

#[test]
fn each_instance_is_a_row_of_top_and_inspect() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", REPLICATED);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    let mut frame = String::new();
    wait_until("every instance sampled in top --once", DEADLINE, || {
        let run = kepler.kepler(&["top", "--once"]);
        run.success();
        frame = run.stdout;
        ["web.1", "web.2", "solo"]
            .iter()
            .all(|name| sampled_row(&frame, name).is_some())
    });
    assert!(
        frame.find(" web.1 ") < frame.find(" web.2 "),
        "instances by number: {frame}"
    );

    // A service stands for its instances, an instance for itself; each
    // instance's environment has its replica number.
    let all = json(&kepler, &["inspect", "web"]);
    let instances = all["services"].as_array().unwrap();
    let names: Vec<&str> = instances
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web.1", "web.2"], "{all}");
    for (number, instance) in instances.iter().enumerate() {
        assert_eq!(instance["state"]["status"], "running", "{instance}");
        let environment = &instance["environment"];
        assert_eq!(
            environment["KEPLER_REPLICA"],
            (number + 1).to_string(),
            "{instance}"
        );
        assert_eq!(environment["KEPLER_REPLICAS"], "2", "{instance}");
        assert_eq!(instance["config"]["replicas"], 2, "{instance}");
    }
    let one = json(&kepler, &["inspect", "web.2"]);
    assert_eq!(one["services"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["services"][0]["name"], "web.2");
    let solo = json(&kepler, &["inspect", "solo"]);
    assert!(
        solo["services"][0]["environment"]
            .get("KEPLER_REPLICA")
            .is_none(),
        "{solo}"
    );
    kepler
        .kepler(&["inspect", "nosuch"])
        .failure()
        .stderr_has("no service named `nosuch`");
}

#[test]
fn the_history_sums_a_services_instances_and_survives_scale() {
    let kepler = Kepler::started();
    kepler.write("kepler.yaml", HEAVY);
    kepler.kepler(&["start", "-d", "--wait"]).success();
    // Samples taken once every process holds its memory.
    let mut stats = Value::Null;
    wait_until("web and solo sampled with their memory", DEADLINE, || {
        stats = json(&kepler, &["stats", "--json", "--since", "300ms"]);
        [("web", 2.0), ("solo", 1.0)]
            .iter()
            .all(|(name, processes)| {
                stats_of(&stats, name)["memory_bytes"]["min"]
                    .as_f64()
                    .is_some_and(|m| m > processes * (50 << 20) as f64)
            })
    });
    let names: Vec<&str> = stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["solo", "web"], "one entry per service: {stats}");
    // Two processes weigh about twice what one does.
    let memory = |name: &str| {
        stats_of(&stats, name)["memory_bytes"]["min"]
            .as_f64()
            .unwrap()
    };
    assert!(memory("web") > memory("solo") * 1.5, "{stats}");

    kepler
        .kepler(&["stats", "web.1"])
        .failure()
        .stderr_has("`web.1` is an instance of `web`");

    // Scaling keeps the history: web's samples go on growing.
    let before = stats_of(&json(&kepler, &["stats", "--json"]), "web")["samples"]
        .as_u64()
        .unwrap();
    kepler.kepler(&["scale", "web=3"]).success();
    wait_until("web sampled after the scale", DEADLINE, || {
        let stats = json(&kepler, &["stats", "--json"]);
        stats_of(&stats, "web")["samples"].as_u64().unwrap() >= before + 5
    });
    let frame = kepler.kepler(&["top", "--once"]);
    frame.success().stdout_has(" web.3 ");
}
