//! Troupe as several processes on one Redis and one PostgreSQL: real
//! `troupe serve` coordinators and `troupe worker` processes, killed with
//! SIGKILL, and the servers under them restarted. Each test starts its own
//! Redis and PostgreSQL (on free ports), so it can kill them and nothing else
//! sees its topics or tables. The cluster and the checks of its ledgers are
//! in `cluster`.

// Test code: a failed expectation is meant to panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

#[path = "distributed/cluster.rs"]
mod cluster;
mod common;

use std::time::{Duration, Instant};

use cluster::{Cluster, Proc, ROLES, assert_completed_once, events, wait_until};

#[test]
fn two_coordinators_and_three_workers_complete_200_tasks() {
    let Some(cluster) = Cluster::start("two_coordinators_and_three_workers_complete_200_tasks")
    else {
        return;
    };
    let (c1, base1) = cluster.coordinator();
    let (c2, base2) = cluster.coordinator();
    let workers: Vec<(Proc, String)> = ROLES.iter().map(|r| cluster.worker(r, "mock")).collect();

    let started = Instant::now();
    let ids: Vec<String> = (0..200)
        .map(|n| {
            let base = if n % 2 == 0 { &base1 } else { &base2 };
            cluster.submit(base, &format!("Write report number {n} about rust"))
        })
        .collect();
    let mut procs = vec![&c1, &c2];
    procs.extend(workers.iter().map(|(p, _)| p));
    let ledgers = cluster.wait_all(&base1, &ids, Duration::from_secs(180), &procs);
    eprintln!(
        "200 tasks on 2 coordinators and 3 workers: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_completed_once(&ledgers);
    // Both coordinators drove tasks, and every worker process did work.
    let drivers: std::collections::HashSet<&str> = ledgers
        .iter()
        .map(|l| events(l, "task_completed")[0]["agent"].as_str().unwrap())
        .collect();
    assert_eq!(drivers.len(), 2, "tasks were driven by {drivers:?}");
    for (_, agent) in &workers {
        assert!(
            ledgers.iter().any(|l| events(l, "subtask_completed")
                .iter()
                .any(|e| e["agent"] == agent.as_str())),
            "worker {agent} completed nothing"
        );
    }
}

#[test]
fn a_killed_worker_s_subtask_is_redelivered_and_the_task_completes() {
    let Some(cluster) = Cluster::start("a_killed_worker_s_subtask_is_redelivered") else {
        return;
    };
    let (coordinator, base) = cluster.coordinator();
    let slow = cluster.slow_llm(60_000);
    let (mut doomed, doomed_agent) = cluster.worker("researcher", &slow);
    let (analyst, _) = cluster.worker("analyst", "mock");
    let (writer, _) = cluster.worker("writer", "mock");
    let id = cluster.submit(&base, "Write a short report about rust");

    // The researcher's subtask is in the doomed worker's hands.
    wait_until("the researcher starting", Duration::from_secs(30), || {
        cluster.ledger(&base, &id).is_some_and(|l| {
            events(&l, "subtask_started")
                .iter()
                .any(|e| e["agent"] == doomed_agent.as_str())
        })
    });
    let (survivor, survivor_agent) = cluster.worker("researcher", "mock");
    let killed = Instant::now();
    doomed.kill();
    let mut recovered = None;
    wait_until(
        "the subtask completing elsewhere",
        Duration::from_secs(60),
        || {
            let done = cluster.ledger(&base, &id).is_some_and(|l| {
                events(&l, "subtask_completed")
                    .iter()
                    .any(|e| e["agent"] == survivor_agent.as_str())
            });
            if done {
                recovered = Some(killed.elapsed());
            }
            done
        },
    );
    let recovered = recovered.unwrap();
    eprintln!(
        "recovery after a worker's SIGKILL (visibility timeout 2 s): {} ms",
        recovered.as_millis()
    );
    let procs = [&coordinator, &analyst, &writer, &survivor];
    let ledgers = cluster.wait_all(&base, &[id], Duration::from_secs(60), &procs);
    assert_completed_once(&ledgers);
    // Redelivered by the bus (the same attempt), not re-dispatched after a timeout.
    let researcher = ledgers[0]["task_ledger"]["subtasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "researcher")
        .unwrap()
        .clone();
    assert_eq!(researcher["attempts"], 1, "{:#}", ledgers[0]);
    assert_eq!(researcher["agent"], survivor_agent.as_str());
}

#[test]
fn a_killed_coordinator_s_task_is_resumed_by_another() {
    let Some(cluster) = Cluster::start("a_killed_coordinator_s_task_is_resumed_by_another") else {
        return;
    };
    let (mut doomed, doomed_base) = cluster.coordinator();
    let (survivor, base) = cluster.coordinator();
    let slow = cluster.slow_llm(1_500);
    let workers: Vec<(Proc, String)> = ROLES.iter().map(|r| cluster.worker(r, &slow)).collect();
    let id = cluster.submit(&doomed_base, "Write a short report about rust");
    wait_until(
        "the first subtask being dispatched",
        Duration::from_secs(30),
        || {
            cluster
                .ledger(&doomed_base, &id)
                .is_some_and(|l| !events(&l, "subtask_dispatched").is_empty())
        },
    );
    let first = cluster.ledger(&doomed_base, &id).unwrap();
    let doomed_agent = events(&first, "task_submitted")[0]["agent"]
        .as_str()
        .unwrap()
        .to_owned();
    let killed = Instant::now();
    doomed.kill();

    let mut procs = vec![&survivor];
    procs.extend(workers.iter().map(|(p, _)| p));
    let ledgers = cluster.wait_all(&base, &[id], Duration::from_secs(90), &procs);
    eprintln!(
        "task resumed and completed {} ms after its coordinator's SIGKILL (lease 2 s)",
        killed.elapsed().as_millis()
    );
    assert_completed_once(&ledgers);
    let ledger = &ledgers[0];
    let resumed = events(ledger, "task_resumed");
    assert_eq!(resumed.len(), 1, "{ledger:#}");
    assert_ne!(resumed[0]["agent"], doomed_agent.as_str());
    assert_ne!(
        events(ledger, "task_completed")[0]["agent"],
        doomed_agent.as_str()
    );
}

/// Submits `n` tasks, lets some get under way, calls `chaos`, and checks
/// that every task still completes, once.
fn survives(cluster: &Cluster, n: usize, chaos: impl FnOnce()) {
    let (coordinator, base) = cluster.coordinator();
    // Every call takes a second: a task lasts about four.
    let slow = cluster.slow_llm(1_000);
    let workers: Vec<(Proc, String)> = ROLES.iter().map(|r| cluster.worker(r, &slow)).collect();
    let ids: Vec<String> = (0..n)
        .map(|i| cluster.submit(&base, &format!("Write report number {i} about rust")))
        .collect();
    wait_until(
        "a first subtask completing",
        Duration::from_secs(60),
        || {
            cluster
                .ledger(&base, &ids[0])
                .is_some_and(|l| !events(&l, "subtask_completed").is_empty())
        },
    );
    // The chaos must hit work under way, or the test proves nothing.
    let open = ids
        .iter()
        .filter(|id| {
            cluster
                .ledger(&base, id)
                .is_none_or(|l| l["task_ledger"]["status"] != "completed")
        })
        .count();
    assert!(open > n / 2, "only {open} of {n} tasks were still open");
    chaos();
    let mut procs = vec![&coordinator];
    procs.extend(workers.iter().map(|(p, _)| p));
    let ledgers = cluster.wait_all(&base, &ids, Duration::from_secs(180), &procs);
    if std::panic::catch_unwind(|| assert_completed_once(&ledgers)).is_err() {
        panic!("the coordinator's log:\n{}", coordinator.log());
    }
}

#[test]
fn every_task_completes_once_across_a_redis_restart() {
    let Some(cluster) = Cluster::start("every_task_completes_once_across_a_redis_restart") else {
        return;
    };
    // Redis keeps nothing on disk: the restart loses every stream and group.
    survives(&cluster, 30, || cluster.redis.restart());
}

#[test]
fn every_task_completes_once_across_a_postgres_restart() {
    let Some(cluster) = Cluster::start("every_task_completes_once_across_a_postgres_restart")
    else {
        return;
    };
    survives(&cluster, 30, || {
        cluster.pg.stop();
        std::thread::sleep(Duration::from_secs(2));
        cluster.pg.start_again();
    });
}

#[test]
fn operators_see_live_workers_and_requeue_dead_letters() {
    let Some(cluster) = Cluster::start("operators_see_live_workers_and_requeue_dead_letters")
    else {
        return;
    };
    let (worker, agent) = cluster.worker("researcher", "mock");
    let config = cluster.dir.path().join("troupe.toml");
    let config = config.to_str().unwrap();
    let url = cluster.redis.url();
    let troupe = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--bus", &url, "--config", config]);
        common::run(cluster.dir.path(), &all, &[])
    };

    let listed = troupe(&["workers", "--json"]);
    assert!(listed.status.success(), "{}", common::stderr(&listed));
    let workers = common::stdout_json(&listed);
    let me = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["agent"] == agent.as_str())
        .unwrap_or_else(|| panic!("{agent} not in {workers:#}"));
    assert_eq!(me["role"], "researcher");
    assert_eq!(me["concurrency"], 8);

    // A message no researcher can handle goes to the topic's dead letters.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use troupe::core::bus::Bus as _;
        use troupe::core::envelope::{Envelope, MessageKind, Progress};
        let bus = troupe_redis::RedisBus::connect(&url, troupe_redis::RedisBusConfig::default())
            .await
            .unwrap();
        let from = troupe::core::AgentId::new("intruder").unwrap();
        let stray = Envelope::new(
            MessageKind::Progress,
            from,
            "role.researcher",
            &Progress::Started,
        )
        .unwrap();
        bus.publish("role.researcher", stray).await.unwrap();
    });
    let dead = || {
        let out = troupe(&["dlq", "list", "--topic", "role.researcher", "--json"]);
        assert!(out.status.success(), "{}", common::stderr(&out));
        common::stdout_json(&out)
    };
    wait_until(
        "the stray message being set aside",
        Duration::from_secs(20),
        || dead().as_array().unwrap().len() == 1,
    );
    let letter = dead()[0].clone();
    assert_eq!(letter["topic"], "role.researcher");
    assert!(
        letter["reason"].as_str().unwrap().contains("progress"),
        "{letter:#}"
    );
    let text = troupe(&["dlq", "list", "--topic", "role.researcher"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains(letter["envelope"]["id"].as_str().unwrap())
    );

    // Requeued, it is delivered again (and set aside again: it is still unusable).
    let id = letter["envelope"]["id"].as_str().unwrap().to_owned();
    let requeued = troupe(&["dlq", "requeue", "--topic", "role.researcher", "--id", &id]);
    assert!(requeued.status.success(), "{}", common::stderr(&requeued));
    assert_eq!(
        String::from_utf8_lossy(&requeued.stdout).trim(),
        "1 dead letter(s) put back on role.researcher"
    );
    wait_until(
        "the requeued message coming back",
        Duration::from_secs(20),
        || {
            dead()
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["envelope"]["id"] == id.as_str())
        },
    );
    let bad = troupe(&[
        "dlq",
        "requeue",
        "--topic",
        "role.researcher",
        "--id",
        "nope",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(common::stderr(&bad).contains("is not a message id"));
    drop(worker);
}

#[test]
fn a_worker_refuses_the_memory_bus_and_unknown_roles() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run(
        dir.path(),
        &["worker", "--role", "researcher", "--llm", "mock"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("needs a shared bus"),
        "{}",
        common::stderr(&out)
    );
    let out = common::run(
        dir.path(),
        &[
            "worker",
            "--role",
            "juggler",
            "--llm",
            "mock",
            "--bus",
            "redis://127.0.0.1:1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("unknown role \"juggler\""),
        "{}",
        common::stderr(&out)
    );
}
