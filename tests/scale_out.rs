//! Scale-out: two `coldtrail serve` processes in one Kafka consumer group (librdkafka's mock cluster),
//! each with its own data directory (WAL, positions, credentials) and one shared store location. They
//! split the partitions, either one's SQL sees every record, one is killed with SIGKILL while records
//! flow and the other takes its partitions over with nothing lost, and a SIGTERM hands partitions over
//! with every record stored once.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

const TOPIC: &str = "lambda-logs";
const PARTITIONS: i32 = 4;

struct Instance {
    child: Child,
    data: PathBuf,
    pg_port: u16,
}

fn launch(data: &Path, location: &Path, config: &Path) -> Instance {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("--data")
        .arg(data)
        .arg("--location")
        .arg(location)
        .args(["serve", "--pg-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("COLDTRAIL_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut pg_port = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("postgres listening on 127.0.0.1:") {
            pg_port = rest.split(':').next().and_then(|p| p.parse().ok());
        }
        if line.starts_with("source kafka:") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Instance { child, data: data.to_path_buf(), pg_port: pg_port.expect("serve printed its PostgreSQL address") }
}

fn produce(bootstrap: String, range: std::ops::Range<usize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let producer: FutureProducer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("linger.ms", "5").create().unwrap();
        let ids: Vec<usize> = range.collect();
        for chunk in ids.chunks(100) {
            let sends = chunk.iter().map(|i| {
                let payload =
                    format!("2024-03-05T10:00:00.000Z\t8f507cfc-1a2b-4697-b07a-ac58fc914c95\tINFO\trecord-{i}");
                let producer = &producer;
                async move {
                    let record = FutureRecord::to(TOPIC).payload(&payload).key("k").partition(*i as i32 % PARTITIONS);
                    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
                }
            });
            futures::future::join_all(sends).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The ids of the stored `record-<i>` messages as one instance's SQL sees them, each as often as stored,
/// and how many nodes sealed log segments.
async fn stored(instance: &Instance) -> Option<(Vec<usize>, i64)> {
    let credentials: serde_json::Value =
        serde_json::from_slice(&std::fs::read(instance.data.join("credentials.json")).ok()?).ok()?;
    let password = credentials["password"].as_str()?;
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=admin password={password} dbname=coldtrail", instance.pg_port),
        tokio_postgres::NoTls,
    )
    .await
    .ok()?;
    tokio::spawn(connection);
    let rows = client.query("SELECT message FROM logs WHERE message LIKE '%record-%'", &[]).await.ok()?;
    let ids =
        rows.iter().map(|row| row.get::<_, String>(0).rsplit_once("record-").unwrap().1.parse().unwrap()).collect();
    let nodes = client
        .query_one("SELECT count(DISTINCT node) FROM ledger WHERE table_name = 'logs' AND op = 'add'", &[])
        .await
        .ok()?
        .get::<_, i64>(0);
    Some((ids, nodes))
}

/// Waits until the instance's SQL sees every id of `0..n` at least once.
async fn wait_for_all(instance: &Instance, n: usize, what: &str) -> (Vec<usize>, i64) {
    let started = Instant::now();
    loop {
        if let Some((ids, nodes)) = stored(instance).await {
            let distinct: BTreeSet<usize> = ids.iter().copied().collect();
            if distinct.len() >= n {
                return (ids, nodes);
            }
            assert!(started.elapsed() < Duration::from_secs(90), "{what}: {} of {n} records visible", distinct.len());
        } else {
            assert!(started.elapsed() < Duration::from_secs(90), "{what}: the SQL server does not answer");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn duplicates(ids: &[usize]) -> Vec<usize> {
    let mut seen = BTreeSet::new();
    ids.iter().copied().filter(|id| !seen.insert(*id)).collect()
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args([name, &child.id().to_string()]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serve_processes_split_a_group_and_take_over_from_each_other() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    // The detection group's topic (the mock cluster serves no topic creation; an operator would create it).
    cluster.create_topic("coldtrail-detect", 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let config = dir.path().join("coldtrail.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nflush_after_secs = 1\nrefresh_secs = 0.5\n\n[[sources]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = \"{bootstrap}\"\ngroup = \"scale-out\"\ntopics = [\"{TOPIC}:lambda\"]\n"
        ),
    )
    .unwrap();
    let (data_a, data_b) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = launch(&data_a, &shared, &config);
    let mut b = launch(&data_b, &shared, &config);

    // Both in the group: they split the partitions, and each one's SQL sees both one's rows.
    let (n1, n2, n3) = (2_000, 4_000, 6_000);
    produce(bootstrap.clone(), 0..n1).await.unwrap();
    let (ids, nodes) = wait_for_all(&a, n1, "A after the first part").await;
    assert_eq!(nodes, 2, "both processes stored and sealed log segments");
    assert_eq!(duplicates(&ids), Vec::<usize>::new(), "stored once while both run");
    let (ids, _) = wait_for_all(&b, n1, "B after the first part").await;
    assert_eq!(ids.len(), n1);

    // A is killed while records flow: B takes its partitions over (after the session timeout).
    let flowing = produce(bootstrap.clone(), n1..n2);
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    flowing.await.unwrap();
    // What A had in its WAL but not yet sealed is on A's disk: it is sealed when A comes back (its data
    // directory is persistent, as a StatefulSet's volume is). Meanwhile B has taken A's partitions over.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let a = launch(&data_a, &shared, &config);
    let (ids, _) = wait_for_all(&b, n2, "B after A was killed and came back").await;
    let again = duplicates(&ids);
    assert!(
        again.len() <= 400,
        "a killed process leaves at most its last batch to be read again: {} duplicates",
        again.len()
    );
    eprintln!("records read again after the SIGKILL: {}", again.len());

    // B stops with SIGTERM while records flow: A takes over, and every record of this part is stored once.
    let flowing = produce(bootstrap.clone(), n2..n3);
    tokio::time::sleep(Duration::from_millis(700)).await;
    signal(&b.child, "-TERM");
    assert!(b.child.wait().unwrap().success(), "serve drains and exits 0 at SIGTERM");
    flowing.await.unwrap();
    let (ids, nodes) = wait_for_all(&a, n3, "A after B stopped").await;
    assert_eq!(nodes, 2);
    let twice = duplicates(&ids);
    assert!(twice.iter().all(|id| (n1..n2).contains(id)), "only the killed batch may repeat: {twice:?}");
    assert_eq!(twice.len(), again.len());
    let mut a = a;
    signal(&a.child, "-TERM");
    assert!(a.child.wait().unwrap().success());
}
