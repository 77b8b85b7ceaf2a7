//! What every engine test needs: the engine (or a loud skip), unique names, a cleanup guard that also
//! runs when a test fails, the stub node image, specs, and bounded polling.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use peerfleet_core::Address;
use peerfleet_core::network::{ChainId, City, HealthCheck, ProviderKind, Region, RestartPolicy, Role};
use peerfleet_core::provider::{ContainerContext, ContainerEngine, CreateContext, MachineProvider};
use peerfleet_core::resource::{Container, ContainerSpec, Machine, MachineSpec};
use peerfleet_docker::image::reference_image_named;
use peerfleet_docker::{DockerEngine, LocalNodes, ensure_image, labels};

/// Every test body runs under this limit, so a hang fails instead of stalling the run.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// The engine, or `None` after printing that the test is skipped. Under CI a missing engine fails.
pub async fn engine() -> Option<Arc<DockerEngine>> {
    let connected = tokio::time::timeout(Duration::from_secs(15), DockerEngine::connect_local()).await;
    let error = match connected {
        Ok(Ok(engine)) => return Some(Arc::new(engine)),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the engine did not answer within 15 s".to_string(),
    };
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but the Docker engine is unreachable: {error}");
    }
    eprintln!("SKIPPED: no Docker engine ({error})");
    None
}

/// One test's peer network on the engine: a unique name, local nodes, and the guard that removes
/// everything labelled with the name when the test ends, passed or failed.
pub struct TestNet {
    /// The engine.
    pub engine: Arc<DockerEngine>,
    /// The peer network's name.
    pub name: String,
    /// Local nodes on the engine.
    pub nodes: LocalNodes,
    /// Removes what the test made.
    pub guard: Cleanup,
    /// Declared last so it is released after the guard has cleaned up.
    _slot: tokio::sync::SemaphorePermit<'static>,
}

/// Tests running at once. Each makes up to four bridge networks, and the engine's default address
/// pools hold about thirty, shared with everything else on the machine.
static NETWORK_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

impl TestNet {
    /// A fresh network named after `prefix`, or `None` when the test is skipped (see [`engine`]).
    pub async fn start(prefix: &str) -> Option<TestNet> {
        let engine = engine().await?;
        let slot = NETWORK_SLOTS.acquire().await.expect("invariant: the semaphore is never closed");
        let name = unique(prefix);
        Some(TestNet {
            nodes: LocalNodes::new(engine.clone()),
            guard: Cleanup::network(&name),
            engine,
            name,
            _slot: slot,
        })
    }

    /// A local node of the cluster `cluster` (its region has the same name), slot 0.
    pub async fn node(&self, cluster: &str) -> anyhow::Result<Machine> {
        let spec = node_spec(&self.name, cluster, 0, cluster);
        Ok(self.nodes.create_machine(&spec, &CreateContext::default()).await?)
    }

    /// The stub node's image tag (see [`stub_image`]).
    pub async fn stub_image(&self) -> anyhow::Result<String> {
        stub_image(&self.engine).await
    }

    /// A container of `service` at `slot` on `node`, from `image`, healthy by the stub's `probe` arguments.
    pub fn container(
        &self,
        image: &str,
        service: &str,
        slot: u32,
        node: &Machine,
        probe: &[&str],
    ) -> ContainerSpec {
        let name = format!("{service}-{}", slot + 1);
        let mut command = vec!["/peerfleet-node".to_string(), "probe".to_string()];
        command.extend(probe.iter().map(|s| s.to_string()));
        ContainerSpec {
            address: Address::container(service, slot),
            network: self.name.clone(),
            service: service.to_string(),
            role: Role::Relay,
            name: name.clone(),
            aliases: vec![name, service.to_string()],
            node: node.address.clone(),
            image: image.to_string(),
            env: BTreeMap::new(),
            ports: vec![26656],
            restart: RestartPolicy::Always,
            health: HealthCheck { command, interval_ms: 200, timeout_ms: 2000, retries: 2 },
            needs: Vec::new(),
            chain_id: None,
            seals: BTreeMap::new(),
        }
    }

    /// Creates `spec` on `node`.
    pub async fn create(&self, spec: &ContainerSpec, node: &Machine) -> anyhow::Result<Container> {
        Ok(self.engine.create_container(spec, &on(node)).await?)
    }
}

/// Runs a test body under [`TEST_TIMEOUT`].
pub async fn bounded<F: Future<Output = anyhow::Result<()>>>(body: F) -> anyhow::Result<()> {
    tokio::time::timeout(TEST_TIMEOUT, body).await.context("test timed out")?
}

/// A network name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!(
        "pft{prefix}{}x{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// Removes, when dropped (test passed or panicked), everything labelled with its peer networks plus the
/// extra objects named, on a thread of its own so it works from inside a runtime.
pub struct Cleanup {
    work: Leftovers,
}

#[derive(Default)]
struct Leftovers {
    networks: Vec<String>,
    containers: Vec<String>,
    docker_networks: Vec<String>,
    images: Vec<String>,
}

impl Cleanup {
    /// A guard for the peer network `network`'s labelled containers and networks.
    pub fn network(network: &str) -> Self {
        Cleanup { work: Leftovers { networks: vec![network.to_string()], ..Default::default() } }
    }

    /// Also removes the container `name` (an unlabelled one the test made).
    pub fn container(&mut self, name: &str) {
        self.work.containers.push(name.to_string());
    }

    /// Also removes the Docker network `name` (an unlabelled one the test made).
    pub fn docker_network(&mut self, name: &str) {
        self.work.docker_networks.push(name.to_string());
    }

    /// Also removes the image `tag`.
    pub fn image(&mut self, tag: &str) {
        self.work.images.push(tag.to_string());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let work = std::mem::take(&mut self.work);
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(work.run())
        })
        .join();
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup incomplete: {e:#}"),
            Err(_) => eprintln!("cleanup panicked"),
        }
    }
}

impl Leftovers {
    async fn run(&self) -> anyhow::Result<()> {
        let engine = DockerEngine::connect_local().await?;
        let docker = engine.client();
        let force = || RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        let mut containers = self.containers.clone();
        let mut networks = self.docker_networks.clone();
        for network in &self.networks {
            let filters = HashMap::from([("label", vec![format!("{}={network}", labels::NETWORK)])]);
            let list = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
            containers.extend(docker.list_containers(Some(list)).await?.into_iter().filter_map(|c| c.id));
            let list = ListNetworksOptionsBuilder::default().filters(&filters).build();
            networks.extend(docker.list_networks(Some(list)).await?.into_iter().filter_map(|n| n.id));
        }
        // Best effort: whatever is already gone is fine.
        for c in containers {
            let _ = docker.remove_container(&c, Some(force())).await;
        }
        for n in networks {
            let _ = docker.remove_network(&n).await;
        }
        for image in &self.images {
            let options = RemoveImageOptionsBuilder::default().force(true).build();
            let _ = docker.remove_image(image, Some(options), None).await;
        }
        Ok(())
    }
}

/// Polls `check` every 200 ms until it returns `Some`, failing after `limit` with `what`.
pub async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("gave up after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The stub node binary (see `fixtures/stub_node.rs`), compiled once per test process.
pub fn stub_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| compile_stub().map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)
}

fn compile_stub() -> anyhow::Result<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stub_node.rs");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("stub-node-{}", std::process::id()));
    // The rustc next to the cargo running the tests, else the one on PATH.
    let rustc = std::env::var_os("CARGO")
        .map(|c| PathBuf::from(c).with_file_name("rustc"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("rustc"));
    let status = Command::new(&rustc)
        .args(["--edition=2021", "-C", "opt-level=1", "-C", "debuginfo=0", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .with_context(|| format!("running {}", rustc.display()))?;
    if !status.success() {
        bail!("compiling the stub node failed: {status}");
    }
    Ok(out)
}

/// The repository of the stub node's image. It is kept between runs (a few MB) as a build cache; its
/// tag changes only when the stub or the system libraries do.
pub const STUB_REPOSITORY: &str = "peerfleet-test-node";

/// The stub node's image on `engine`, built when missing; returns its tag.
pub async fn stub_image(engine: &DockerEngine) -> anyhow::Result<String> {
    // Parallel tests would otherwise build the same image at the same time.
    static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = BUILD.lock().await;
    let image = reference_image_named(STUB_REPOSITORY, &stub_binary()?)?;
    ensure_image(engine.client(), &image).await?;
    Ok(image.tag)
}

/// A local node's spec.
pub fn node_spec(network: &str, cluster: &str, slot: u32, region: &str) -> MachineSpec {
    MachineSpec {
        address: Address::machine(cluster, slot),
        network: network.to_string(),
        provider: ProviderKind::Local,
        region: Region {
            slug: region.to_string(),
            city: Some(City::Frankfurt).filter(|_| region == "frankfurt"),
        },
        size: "small".into(),
        image: None,
        tags: BTreeSet::from(["peer_cluster".to_string()]),
        profile: None,
        bootstrap: 1,
        chain_id: None,
        generation: 0,
        idempotency_key: format!("{network}/{cluster}/{slot}"),
        firewall: None,
    }
}

/// Placement on `node`, as the executor passes it.
pub fn on(node: &Machine) -> ContainerContext {
    ContainerContext { node: node.clone(), hosts: BTreeMap::new(), beside: None }
}

/// A chain ID for genesis-labelled objects.
pub fn chain() -> ChainId {
    ChainId::of(b"peerfleet docker tests")
}
