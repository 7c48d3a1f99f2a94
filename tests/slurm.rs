//! A planned sweep on a real Slurm: a one-node cluster on this machine (munged, slurmctld and
//! slurmd in the foreground, from a minimal `slurm.conf` in a temporary folder, stopped at
//! the end), the plan's batch script submitted as a 4-task job array with `sbatch --wait`,
//! collected, and compared with a local `fergpu sweep` of the same grid, metric for metric.
//! Then one task is killed mid-run, and submitting the array again finishes the experiment
//! with the same results.
//!
//! Needs Debian's `slurmctld`, `slurmd` and `munge` and root (slurmd starts jobs as their
//! user): without them the tests say so and pass, unless `FERGPU_REQUIRE_SLURM=1` (set by
//! `.ci/run`, which installs them) makes that a failure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether this machine can run the cluster; panics when it cannot and CI requires it.
fn slurm_available() -> bool {
    let have = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = [
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "scancel",
    ]
    .into_iter()
    .filter(|b| !have(b))
    .collect();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let why = match (missing.is_empty(), root) {
        (true, true) => return true,
        (false, _) => format!("missing {}", missing.join(", ")),
        (true, false) => "slurmd must run as root to start jobs".to_string(),
    };
    if std::env::var("FERGPU_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
        panic!("FERGPU_REQUIRE_SLURM=1 but Slurm cannot run here: {why}");
    }
    eprintln!("skipping the Slurm test: {why} (apt-get install slurmctld slurmd munge)");
    false
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one-node cluster: its daemons are stopped when it is dropped.
struct Cluster {
    dir: PathBuf,
    daemons: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Cluster {
    /// Starts munged, slurmctld and slurmd for one node (this machine, all its cores) with
    /// everything under `dir`, and waits until the node is idle.
    fn start(dir: &Path) -> Cluster {
        let _ = std::fs::remove_dir_all(dir);
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            daemons: Vec::new(),
        };
        cluster.start_munge();
        cluster.write_conf();
        cluster.daemon("slurmctld", &["-D", "-i"]);
        cluster.daemon("slurmd", &["-D"]);
        cluster.wait_idle();
        cluster
    }

    fn start_munge(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let m = self.dir.join("munge");
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o755)).unwrap();
        let key: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(m.join("munge.key"), key).unwrap();
        std::fs::set_permissions(m.join("munge.key"), std::fs::Permissions::from_mode(0o400))
            .unwrap();
        let arg = |k: &str, f: &str| format!("--{k}={}", m.join(f).display());
        let args = [
            "-F".to_string(),
            "-f".to_string(),
            arg("socket", "munge.socket"),
            arg("key-file", "munge.key"),
            arg("log-file", "munged.log"),
            arg("pid-file", "munged.pid"),
            arg("seed-file", "munged.seed"),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.daemon("munged", &args);
        let start = Instant::now();
        while !m.join("munge.socket").exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "munged did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn write_conf(&self) {
        let host = String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let d = self.dir.display();
        let conf = format!(
            "ClusterName=fergputest\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n\
             SlurmctldPort={}\nSlurmdPort={}\nAuthType=auth/munge\nCredType=cred/munge\n\
             AuthInfo=socket={d}/munge/munge.socket\nStateSaveLocation={d}/state\n\
             SlurmdSpoolDir={d}/spool\nSlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd.pid\nSlurmctldLogFile={d}/log/slurmctld.log\n\
             SlurmdLogFile={d}/log/slurmd.log\nProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\nSchedulerType=sched/backfill\nSelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\nReturnToService=2\nMpiDefault=none\n\
             JobCompType=jobcomp/none\nAccountingStorageType=accounting_storage/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN\n\
             PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            free_port(),
            free_port()
        );
        std::fs::write(self.dir.join("slurm.conf"), conf).unwrap();
    }

    /// Runs a Slurm command against this cluster.
    fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(bin);
        c.env("SLURM_CONF", self.dir.join("slurm.conf"));
        c
    }

    fn daemon(&mut self, bin: &str, args: &[&str]) {
        let log = std::fs::File::create(self.dir.join("log").join(format!("{bin}.out"))).unwrap();
        let child = self
            .command(bin)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e}"));
        self.daemons.push(child);
    }

    fn wait_idle(&self) {
        let start = Instant::now();
        loop {
            let out = self.command("sinfo").args(["-h", "-o", "%T"]).output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle") {
                return;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let logs =
                    std::fs::read_to_string(self.dir.join("log/slurmctld.log")).unwrap_or_default();
                panic!("the Slurm node never became idle; slurmctld.log:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Jobs still in the queue.
    fn queued(&self) -> usize {
        let out = self.command("squeue").args(["-h"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    /// Submits `script`, waiting for every array task to end.
    fn submit_and_wait(&self, script: &Path) {
        let out = self
            .command("sbatch")
            .arg("--wait")
            .arg(script)
            .output()
            .unwrap();
        // --wait exits non-zero when a task failed; the collect step says which.
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }
}

fn fergpu(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fergpu"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) {
    let out = fergpu(dir, args);
    assert!(
        out.status.success(),
        "fergpu {args:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A results table without its `seconds` column.
fn table(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let col = rows[0].iter().position(|h| h == "seconds").unwrap();
    rows.into_iter()
        .map(|mut r| {
            r.remove(col);
            r
        })
        .collect()
}

/// Generated faces and a 4-run grid (mlp, `epochs`, one thread per task, CPU backend).
fn experiment(dir: &Path, epochs: usize) {
    std::fs::create_dir_all(dir).unwrap();
    ok(
        dir,
        &["synth", "--out", "d.csv", "--rows", "600", "--seed", "3"],
    );
    std::fs::write(
        dir.join("grid.toml"),
        format!(
            "[fixed]\nmodel = \"mlp\"\nepochs = {epochs}\nthreads = 1\nadapter = \"cpu\"\n\
             quiet = true\n[grid]\nlr = [0.001, 0.01]\nbatch_size = [16, 32]\n"
        ),
    )
    .unwrap();
    ok(
        dir,
        &[
            "sweep",
            "grid.toml",
            "--data",
            "d.csv",
            "--out",
            "exp",
            "--plan",
        ],
    );
    ok(
        dir,
        &["sweep", "grid.toml", "--data", "d.csv", "--out", "local"],
    );
}

#[test]
fn a_planned_sweep_runs_as_a_slurm_job_array_with_the_local_results_even_after_a_kill() {
    if !slurm_available() {
        return;
    }
    let root = std::env::temp_dir().join(format!("fergpu-slurm-{}", std::process::id()));
    let cluster = Cluster::start(&root.join("cluster"));

    // 1. The whole array, submitted once.
    let dir = root.join("whole");
    experiment(&dir, 1);
    cluster.submit_and_wait(&dir.join("exp/slurm.sbatch"));
    ok(&dir, &["sweep", "--out", "exp", "--collect"]);
    assert_eq!(
        table(&dir.join("exp/results.csv")),
        table(&dir.join("local/results.csv")),
        "Slurm's sweep differs from the local one"
    );
    let log = std::fs::read_to_string(dir.join("exp/logs/task-3.out")).unwrap();
    assert!(log.contains("task 3 of 4"), "{log}");

    // 2. Task 1 killed mid-run (SIGKILL, as a pre-emption or a lost node ends it), then the
    // array submitted again: finished tasks are skipped, task 1 resumes.
    let dir = root.join("killed");
    experiment(&dir, 30);
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("exp/plan.json")).unwrap()).unwrap();
    let task1 = dir
        .join("exp")
        .join(plan["tasks"][1]["name"].as_str().unwrap());
    let out = cluster
        .command("sbatch")
        .arg("--parsable")
        .arg(dir.join("exp/slurm.sbatch"))
        .output()
        .unwrap();
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !job.is_empty(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    while !task1.join("checkpoint-last.safetensors").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "task 1 never saved an epoch"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = cluster
        .command("scancel")
        .args(["--signal=KILL", &format!("{job}_1")])
        .status()
        .unwrap();
    assert!(killed.success());
    let start = Instant::now();
    while cluster.queued() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the array never ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let collect = fergpu(&dir, &["sweep", "--out", "exp", "--collect"]);
    let said = String::from_utf8_lossy(&collect.stderr);
    assert!(!collect.status.success(), "task 1 was killed: {said}");
    assert!(
        said.contains("task 1 (") && said.contains("started, not finished"),
        "{said}"
    );
    cluster.submit_and_wait(&dir.join("exp/slurm.sbatch"));
    ok(&dir, &["sweep", "--out", "exp", "--collect"]);
    assert_eq!(
        table(&dir.join("exp/results.csv")),
        table(&dir.join("local/results.csv")),
        "the resumed array differs from the local sweep"
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&root);
}
