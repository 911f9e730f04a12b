//! The lab's containers through Docker's Engine API (bollard, over the socket): find them, and
//! break and mend them — kill, pause, cut from a network, and, with iptables run in a
//! container's network namespace (the `halab/nettools` image), one-way partitions and lossy
//! links, and with tc there, slow links.

use std::collections::HashMap;
use std::net::IpAddr;

use anyhow::Context;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::StartExecResults;
use bollard::models::{
    ContainerConfig, ContainerCreateBody, ContainerInspectResponse, EndpointSettings, ExecConfig,
    HostConfig, NetworkConnectRequest, NetworkDisconnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateContainerOptionsBuilder, InspectContainerOptions,
    KillContainerOptions, ListContainersOptions, LogsOptionsBuilder, RemoveContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;

use crate::chaos::RandomRun;
use crate::nemesis::{Fault, FaultKind, SLOW_LINK_QUEUE_MS, System, Target};

/// The election containers' service and the alias they answer to on the lab network.
pub(crate) const ELECTION_SERVICE: &str = "election";
const DISPATCHER_SERVICE: &str = "dispatcher";
const MONITOR_SERVICE: &str = "monitor";
/// What the worker services' names begin with (one service per weight).
const WORKER_SERVICES: &str = "worker-";

/// The image scripts/build makes of the host's iptables.
const NETTOOLS_IMAGE: &str = "halab/nettools:dev";

/// The lab's containers, through the Engine API.
pub(crate) struct Lab {
    docker: Docker,
    project: String,
}

/// A container to break, and what it takes to put it back.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) id: String,
    /// store1, or election's container name.
    pub(crate) name: String,
    pub(crate) system: System,
}

impl Lab {
    pub(crate) fn open(project: &str) -> anyhow::Result<Lab> {
        let docker = Docker::connect_with_socket_defaults()
            .context("cannot reach the Docker engine (is /var/run/docker.sock mounted?)")?;
        Ok(Lab {
            docker,
            project: project.to_string(),
        })
    }

    /// The service's containers (id, name), in name order.
    pub(crate) async fn containers(&self, service: &str) -> anyhow::Result<Vec<(String, String)>> {
        let found = self.list(|name| name == service, true).await?;
        anyhow::ensure!(
            !found.is_empty(),
            "no container of {service} in project {}",
            self.project
        );
        Ok(found)
    }

    pub(crate) async fn node(&self, target: &Target, run: &RandomRun) -> anyhow::Result<Node> {
        let all = match target.system {
            System::Store => self.containers(&run.services[target.index]).await?,
            System::Election => self.containers(ELECTION_SERVICE).await?,
            System::Dispatcher => self.containers(DISPATCHER_SERVICE).await?,
            System::Monitor => self.containers(MONITOR_SERVICE).await?,
            // A worker ends itself now and then (the spec's termination after deactivation)
            // and its restart policy starts it again: break one that runs.
            System::Worker => self.running_workers().await?,
        };
        let (id, name) = all[target.index % all.len()].clone();
        Ok(Node {
            id,
            name,
            system: target.system,
        })
    }

    /// The worker containers, of every worker service (worker-w1, …), in name order.
    pub(crate) async fn workers(&self) -> anyhow::Result<Vec<(String, String)>> {
        let found = self
            .list(|name| name.starts_with(WORKER_SERVICES), true)
            .await?;
        anyhow::ensure!(
            !found.is_empty(),
            "no worker container in project {}",
            self.project
        );
        Ok(found)
    }

    /// The worker containers running now (paused ones included), in name order.
    async fn running_workers(&self) -> anyhow::Result<Vec<(String, String)>> {
        let found = self
            .list(|name| name.starts_with(WORKER_SERVICES), false)
            .await?;
        anyhow::ensure!(
            !found.is_empty(),
            "no worker container runs in project {}",
            self.project
        );
        Ok(found)
    }

    /// What the engine knows of container `id`.
    async fn inspect(&self, id: &str) -> anyhow::Result<ContainerInspectResponse> {
        Ok(self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await?)
    }

    /// Whether container `id` runs now (paused or not).
    pub(crate) async fn runs(&self, id: &str) -> anyhow::Result<bool> {
        let inspected = self.inspect(id).await?;
        Ok(inspected.state.and_then(|state| state.running) == Some(true))
    }

    /// The project's containers (id, name) of the services `service` picks, in name order;
    /// with `all`, stopped ones too.
    async fn list(
        &self,
        service: impl Fn(&str) -> bool,
        all: bool,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let label = format!("com.docker.compose.project={}", self.project);
        let options = ListContainersOptions {
            all,
            filters: Some(HashMap::from([("label".to_string(), vec![label])])),
            ..Default::default()
        };
        let mut found: Vec<(String, String)> = self
            .docker
            .list_containers(Some(options))
            .await?
            .into_iter()
            .filter(|c| {
                c.labels.as_ref().is_some_and(|labels| {
                    labels
                        .get("com.docker.compose.service")
                        .is_some_and(|name| service(name))
                })
            })
            .filter_map(|c| Some((c.id?, c.names?.first()?.trim_start_matches('/').to_string())))
            .collect();
        found.sort_by(|x, y| x.1.cmp(&y.1));
        Ok(found)
    }

    /// How many lines the service's containers logged since `since_s` (Unix seconds) contain
    /// `needle`.
    pub(crate) async fn count_log_lines(
        &self,
        service: &str,
        since_s: u64,
        needle: &str,
    ) -> anyhow::Result<usize> {
        let ids: Vec<String> = self
            .containers(service)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.count_lines_of(&ids, since_s, needle).await
    }

    /// How many lines these containers logged since `since_s` (Unix seconds) contain `needle`.
    pub(crate) async fn count_lines_of(
        &self,
        ids: &[String],
        since_s: u64,
        needle: &str,
    ) -> anyhow::Result<usize> {
        let mut count = 0;
        for id in ids {
            let options = LogsOptionsBuilder::new()
                .stdout(true)
                .stderr(true)
                .since(since_s as i32)
                .build();
            let mut lines = self.docker.logs(id, Some(options));
            while let Some(line) = lines.next().await {
                count += usize::from(line?.to_string().contains(needle));
            }
        }
        Ok(count)
    }

    /// The worker containers running and not paused, by their address on `network`.
    pub(crate) async fn live_workers(&self, network: &str) -> anyhow::Result<Vec<(IpAddr, Node)>> {
        let mut live = Vec::new();
        for (id, name) in self.workers().await? {
            let inspected = self.inspect(&id).await?;
            let state = inspected.state.clone().unwrap_or_default();
            if state.running != Some(true) || state.paused == Some(true) {
                continue;
            }
            if let Some(ip) = address_on(inspected, network) {
                let system = System::Worker;
                live.push((ip, Node { id, name, system }));
            }
        }
        Ok(live)
    }

    /// The container's address on `network`, if it has one now.
    pub(crate) async fn address(&self, id: &str, network: &str) -> anyhow::Result<Option<IpAddr>> {
        let inspected = self.inspect(id).await?;
        Ok(address_on(inspected, network))
    }

    /// Breaks `node` as `fault` says; what it returns is what [`Lab::heal`] needs to mend it.
    /// `peer`: the node a deafened one stops hearing.
    pub(crate) async fn inject(
        &self,
        fault: &Fault,
        node: &Node,
        networks: &Networks,
        peer: Option<&Node>,
    ) -> anyhow::Result<Undo> {
        let undo = match fault.kind {
            FaultKind::Kill => {
                self.kill(&node.id).await?;
                Undo::StartIfDown
            }
            FaultKind::Pause => {
                self.pause(&node.id).await?;
                Undo::Unpause
            }
            FaultKind::CutLink => self.cut(&node.id, &[&networks.link]).await?,
            // The client network first. Cut the other way round, a primary would lose its
            // standbys while it still reached the other nodes over the lan — a cut link, by
            // all it can tell — and rightly drop them from the in-sync set, leaving nobody to
            // take over (CI's disconnect-primary failed so, about one run in two, while the
            // order was a hash map's). A cut-off is both networks at once; this comes closest.
            FaultKind::CutOff => self.cut(&node.id, &[&networks.lan, &networks.link]).await?,
            FaultKind::Deafen => {
                let peer = peer.context("a one-way partition names its peer")?;
                let mut sources = Vec::new();
                for network in [&networks.lan, &networks.link] {
                    sources.extend(self.address(&peer.id, network).await?);
                }
                anyhow::ensure!(!sources.is_empty(), "{} has no address", peer.name);
                let rule = Rule::deaf_to(&sources);
                self.iptables(&node.id, "-I", &rule).await?;
                Undo::Delete(rule)
            }
            FaultKind::LossyLink => {
                let percent = fault.loss_percent.context("a lossy link has a loss")?;
                let rule = Rule::losing(percent);
                self.iptables(&node.id, "-I", &rule).await?;
                Undo::Delete(rule)
            }
            FaultKind::SlowLink => {
                let rate = fault.rate_kbit.context("a slow link has a rate")?;
                let shown = self.tc(&node.id, &["qdisc", "show"]).await?;
                let devices = devices_in(&shown);
                anyhow::ensure!(!devices.is_empty(), "{} has no network device", node.name);
                for device in &devices {
                    self.tc(&node.id, &slow_link(device, rate)).await?;
                }
                Undo::Unshape(devices)
            }
        };
        Ok(undo)
    }

    pub(crate) async fn heal(&self, node: &Node, undo: Undo) -> anyhow::Result<()> {
        match undo {
            // The store's restart policy may not apply to a kill through the engine, and the
            // election has none: start it if nothing brings it back.
            Undo::StartIfDown => {
                let inspected = self.inspect(&node.id).await?;
                let state = inspected.state.unwrap_or_default();
                let coming_back = state.running == Some(true) || state.restarting == Some(true);
                if !coming_back {
                    self.start(&node.id).await?;
                }
            }
            Undo::Unpause => self.unpause(&node.id).await?,
            Undo::Reconnect(networks) => {
                for (network, aliases) in networks {
                    self.connect(&network, &node.id, aliases).await?;
                }
            }
            Undo::Delete(rule) => self.iptables(&node.id, "-D", &rule).await?,
            Undo::Unshape(devices) => {
                for device in devices {
                    self.tc(&node.id, &["qdisc", "del", "dev", &device, "root"])
                        .await?;
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn pause(&self, id: &str) -> anyhow::Result<()> {
        self.docker.pause_container(id).await?;
        Ok(())
    }

    pub(crate) async fn unpause(&self, id: &str) -> anyhow::Result<()> {
        self.docker.unpause_container(id).await?;
        Ok(())
    }

    /// `docker stop`: SIGTERM, and SIGKILL after the container's grace period.
    pub(crate) async fn stop(&self, id: &str) -> anyhow::Result<()> {
        self.docker.stop_container(id, None).await?;
        Ok(())
    }

    /// SIGKILL through the engine; returns once the process is gone.
    pub(crate) async fn kill(&self, id: &str) -> anyhow::Result<()> {
        let options = KillContainerOptions {
            signal: "SIGKILL".into(),
        };
        self.docker.kill_container(id, Some(options)).await?;
        Ok(())
    }

    /// A new container of the service container `like` belongs to, numbered `number` as
    /// compose numbers them, on `network` under `alias`, started: `docker-compose up --scale`
    /// through the engine. Returns (id, name).
    pub(crate) async fn add_like(
        &self,
        like: &str,
        number: usize,
        network: &str,
        alias: &str,
    ) -> anyhow::Result<(String, String)> {
        let inspected = self.inspect(like).await?;
        let config = inspected
            .config
            .context("the engine gave no configuration")?;
        let mut labels = config.labels.clone().unwrap_or_default();
        let service = labels
            .get("com.docker.compose.service")
            .cloned()
            .with_context(|| format!("{like} is not a compose service's container"))?;
        labels.insert(
            "com.docker.compose.container-number".to_string(),
            number.to_string(),
        );
        let name = format!("{}_{service}_{number}", self.project);
        let endpoint = EndpointSettings {
            aliases: Some(vec![alias.to_string()]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(network.to_string()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network.to_string(), endpoint)])),
            }),
            ..body_like(config)
        };
        let id = self.launch(&name, body).await?;
        Ok((id, name))
    }

    /// Creates container `name` from `body` and starts it; returns its id.
    async fn launch(&self, name: &str, body: ContainerCreateBody) -> anyhow::Result<String> {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let id = self
            .docker
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("creating {name}"))?
            .id;
        self.start(&id).await?;
        Ok(id)
    }

    /// The value of the environment variable `key` container `id` was created with.
    pub(crate) async fn env_of(&self, id: &str, key: &str) -> anyhow::Result<Option<String>> {
        let inspected = self.inspect(id).await?;
        let setting = format!("{key}=");
        Ok(inspected
            .config
            .and_then(|config| config.env)
            .unwrap_or_default()
            .iter()
            .find_map(|var| var.strip_prefix(&setting).map(str::to_string)))
    }

    /// Container `id` replaced by one of the same name and configuration but for the
    /// environment variable `key`, now `value` (None: unset), and started: what
    /// `docker-compose up` does when a setting changes, through the engine (compose's labels
    /// are kept, so compose still owns it). Returns the new id.
    pub(crate) async fn recreate(
        &self,
        id: &str,
        key: &str,
        value: Option<&str>,
    ) -> anyhow::Result<String> {
        let inspected = self.inspect(id).await?;
        let name = inspected
            .name
            .clone()
            .context("the engine gave no name")?
            .trim_start_matches('/')
            .to_string();
        let config = inspected
            .config
            .context("the engine gave no configuration")?;
        let setting = format!("{key}=");
        let mut env: Vec<String> = config
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|var| !var.starts_with(&setting))
            .collect();
        env.extend(value.map(|value| format!("{key}={value}")));
        let short_id: String = id.chars().take(12).collect();
        let endpoints: HashMap<String, EndpointSettings> = inspected
            .network_settings
            .and_then(|settings| settings.networks)
            .unwrap_or_default()
            .into_iter()
            .map(|(network, endpoint)| {
                // Docker adds the container's short id itself.
                let aliases = endpoint
                    .aliases
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|alias| *alias != short_id)
                    .collect();
                let endpoint = EndpointSettings {
                    aliases: Some(aliases),
                    ..Default::default()
                };
                (network, endpoint)
            })
            .collect();
        let host_config = inspected.host_config;
        let body = ContainerCreateBody {
            env: Some(env),
            host_config,
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(endpoints),
            }),
            ..body_like(config)
        };
        self.remove(id).await?;
        self.launch(&name, body).await
    }

    /// Runs `cmd` in container `id` and returns what it printed on stdout.
    pub(crate) async fn exec(&self, id: &str, cmd: &[&str]) -> anyhow::Result<String> {
        let config = ExecConfig {
            attach_stdout: Some(true),
            cmd: Some(cmd.iter().map(|word| word.to_string()).collect()),
            ..Default::default()
        };
        let exec = self.docker.create_exec(id, config).await?.id;
        let mut stdout = String::new();
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec, None).await?
        {
            while let Some(chunk) = output.next().await {
                if let LogOutput::StdOut { message } = chunk? {
                    stdout.push_str(&String::from_utf8_lossy(&message));
                }
            }
        }
        Ok(stdout)
    }

    /// Removes container `id`, running or not, with its anonymous volumes.
    pub(crate) async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        self.docker.remove_container(id, Some(options)).await?;
        Ok(())
    }

    pub(crate) async fn restart(&self, id: &str) -> anyhow::Result<()> {
        self.docker.restart_container(id, None).await?;
        Ok(())
    }

    /// Starts a stopped container. Docker 20.10 once refused such a start with "Address already
    /// in use" in CI (a nemesis run, with other containers started and reconnected on the same
    /// network around it): the engine asked for an address it had handed on. Re-attaching the
    /// container to its networks drops whatever address it was holding on to; then it starts.
    pub(crate) async fn start(&self, id: &str) -> anyhow::Result<()> {
        match self.docker.start_container(id, None).await {
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 403,
                message,
            }) if message.contains("Address already in use") => {
                tracing::warn!(
                    container = id,
                    "the engine would not start it again ({message}): re-attaching it to its networks"
                );
                for (network, aliases) in self.attachments(id).await? {
                    self.disconnect(&network, id).await?;
                    self.connect(&network, id, aliases).await?;
                }
                self.docker
                    .start_container(id, None)
                    .await
                    .with_context(|| format!("starting {id} again after re-attaching it"))
            }
            outcome => outcome.with_context(|| format!("starting {id} again")),
        }
    }

    /// Disconnects container `id` from those of `networks` it is on, in that order; remembers
    /// the aliases it had on each, to come back under them.
    async fn cut(&self, id: &str, networks: &[&str]) -> anyhow::Result<Undo> {
        let mut attached = self.attachments(id).await?;
        let mut cut = Vec::new();
        for network in networks {
            if let Some(aliases) = attached.remove(*network) {
                self.disconnect(network, id).await?;
                cut.push((network.to_string(), aliases));
            }
        }
        anyhow::ensure!(!cut.is_empty(), "{id} is on none of the networks to cut");
        Ok(Undo::Reconnect(cut))
    }

    /// The networks container `id` is on, each with its aliases there.
    async fn attachments(&self, id: &str) -> anyhow::Result<HashMap<String, Vec<String>>> {
        let inspected = self.inspect(id).await?;
        let networks = inspected
            .network_settings
            .and_then(|settings| settings.networks)
            .unwrap_or_default();
        Ok(networks
            .into_iter()
            .map(|(network, endpoint)| (network, endpoint.aliases.unwrap_or_default()))
            .collect())
    }

    /// Runs `iptables ACTION rule` in the network namespace of container `id`.
    async fn iptables(&self, id: &str, action: &str, rule: &Rule) -> anyhow::Result<()> {
        let mut args = vec![action];
        args.extend(rule.0.iter().map(String::as_str));
        self.nettool(id, &["/iptables-multi", "iptables"], &args)
            .await
            .map(drop)
    }

    /// Runs `tc ARGS` in the network namespace of container `id`; returns what it printed.
    async fn tc(&self, id: &str, args: &[impl AsRef<str>]) -> anyhow::Result<String> {
        self.nettool(id, &["/tc"], args).await
    }

    /// Runs a tool of the nettools image in the network namespace of container `id`: a
    /// short-lived container that shares it (scratch images have no tools). Returns what it
    /// printed; an error if it failed.
    async fn nettool(
        &self,
        id: &str,
        tool: &[&str],
        args: &[impl AsRef<str>],
    ) -> anyhow::Result<String> {
        let tool: Vec<String> = tool.iter().map(|w| w.to_string()).collect();
        let args: Vec<String> = args.iter().map(|w| w.as_ref().to_string()).collect();
        let config = ContainerCreateBody {
            image: Some(NETTOOLS_IMAGE.to_string()),
            entrypoint: Some(tool.clone()),
            cmd: Some(args.clone()),
            labels: Some(HashMap::from([(
                "halab.nemesis".to_string(),
                self.project.clone(),
            )])),
            host_config: Some(HostConfig {
                network_mode: Some(format!("container:{id}")),
                cap_add: Some(vec!["NET_ADMIN".to_string()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let helper = self
            .docker
            .create_container(None::<CreateContainerOptions>, config)
            .await
            .with_context(|| {
                format!("creating a {NETTOOLS_IMAGE} container (scripts/build makes the image)")
            })?
            .id;
        let outcome = self.run_to_end(&helper).await;
        let remove = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        let _ = self.docker.remove_container(&helper, Some(remove)).await;
        let (code, output) = outcome?;
        anyhow::ensure!(
            code == 0,
            "{} {} in {id}'s namespace exited {code}: {}",
            tool.last().map_or("?", String::as_str),
            args.join(" "),
            output.trim()
        );
        Ok(output)
    }

    /// Starts a created container and waits for it: its exit code and what it printed.
    async fn run_to_end(&self, id: &str) -> anyhow::Result<(i64, String)> {
        self.docker.start_container(id, None).await?;
        let mut waited = self.docker.wait_container(id, None::<WaitContainerOptions>);
        let code = match waited.next().await {
            Some(Ok(response)) => response.status_code,
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("the engine said nothing of how {id} ended"),
        };
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let mut output = String::new();
        let mut lines = self.docker.logs(id, Some(options));
        while let Some(line) = lines.next().await {
            output.push_str(&line?.to_string());
        }
        Ok((code, output))
    }

    async fn disconnect(&self, network: &str, id: &str) -> anyhow::Result<()> {
        let request = NetworkDisconnectRequest {
            container: id.to_string(),
            force: Some(true),
        };
        self.docker
            .disconnect_network(network, request)
            .await
            .with_context(|| format!("disconnecting {id} from {network}"))
    }

    /// Back on the network under the aliases it had there.
    async fn connect(&self, network: &str, id: &str, aliases: Vec<String>) -> anyhow::Result<()> {
        let request = NetworkConnectRequest {
            container: id.to_string(),
            endpoint_config: Some(EndpointSettings {
                aliases: Some(aliases),
                ..Default::default()
            }),
        };
        self.docker
            .connect_network(network, request)
            .await
            .with_context(|| format!("connecting {id} to {network}"))
    }
}

/// What makes a container of `config`'s kind: its image, command, environment, health check,
/// volumes, labels and stop signal.
fn body_like(config: ContainerConfig) -> ContainerCreateBody {
    ContainerCreateBody {
        image: config.image,
        env: config.env,
        cmd: config.cmd,
        entrypoint: config.entrypoint,
        healthcheck: config.healthcheck,
        volumes: config.volumes,
        labels: config.labels,
        stop_signal: config.stop_signal,
        ..Default::default()
    }
}

/// An inspected container's address on `network`, if it has one.
fn address_on(inspected: ContainerInspectResponse, network: &str) -> Option<IpAddr> {
    inspected
        .network_settings
        .and_then(|settings| settings.networks?.remove(network)?.ip_address)
        .and_then(|ip| ip.parse().ok())
}

/// The lab's two networks: the one every node is on (clients), and the store's replication
/// network.
#[derive(Debug, Clone)]
pub struct Networks {
    pub lan: String,
    pub link: String,
}

/// How to mend what [`Lab::inject`] broke.
pub(crate) enum Undo {
    /// Started again unless a restart policy brings it back.
    StartIfDown,
    Unpause,
    /// Connected again to each network, under its aliases there.
    Reconnect(Vec<(String, Vec<String>)>),
    /// The iptables rule deleted.
    Delete(Rule),
    /// The slow links on these devices taken off (back to the kernel's default).
    Unshape(Vec<String>),
}

/// An iptables rule of the filter table's INPUT chain, without the action (-I / -D).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule(Vec<String>);

/// The network devices of a namespace but its loopback, from what `tc qdisc show` prints (one
/// line per queueing discipline, `qdisc KIND HANDLE: dev NAME ...`).
fn devices_in(qdisc_show: &str) -> Vec<String> {
    let mut devices: Vec<String> = qdisc_show
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "dev")?;
            words.next().map(str::to_string)
        })
        .filter(|device| device != "lo")
        .collect();
    devices.dedup();
    devices
}

/// `tc` arguments that make what leaves `device` a slow link: a token bucket of `rate_kbit`
/// whose queue holds up to [`SLOW_LINK_QUEUE_MS`] of it.
fn slow_link(device: &str, rate_kbit: u32) -> Vec<String> {
    let words = [
        "qdisc",
        "add",
        "dev",
        device,
        "root",
        "tbf",
        "rate",
        &format!("{rate_kbit}kbit"),
        // Room for a few full-size frames at once (a bucket smaller than a frame passes none).
        "burst",
        "4kb",
        "latency",
        &format!("{SLOW_LINK_QUEUE_MS}ms"),
    ];
    words.iter().map(|w| w.to_string()).collect()
}

impl Rule {
    /// Every packet from these addresses dropped.
    fn deaf_to(sources: &[IpAddr]) -> Rule {
        let sources: Vec<String> = sources.iter().map(IpAddr::to_string).collect();
        Rule::of(&["INPUT", "-s", &sources.join(","), "-j", "DROP"])
    }

    /// `percent` % of received packets dropped, each by chance.
    fn losing(percent: u32) -> Rule {
        let probability = format!("{:.2}", f64::from(percent) / 100.0);
        Rule::of(&[
            "INPUT",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &probability,
            "-j",
            "DROP",
        ])
    }

    fn of(words: &[&str]) -> Rule {
        Rule(words.iter().map(|w| w.to_string()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_link_shapes_every_device_but_the_loopback() {
        let shown = "qdisc noqueue 0: dev lo root refcnt 2 \n\
                     qdisc noqueue 0: dev eth0 root refcnt 2 \n\
                     qdisc noqueue 0: dev eth1 root refcnt 2 \n";
        assert_eq!(devices_in(shown), ["eth0", "eth1"]);
        assert!(devices_in("").is_empty());
        assert_eq!(
            slow_link("eth1", 128).join(" "),
            format!(
                "qdisc add dev eth1 root tbf rate 128kbit burst 4kb latency {SLOW_LINK_QUEUE_MS}ms"
            )
        );
    }

    #[test]
    fn a_deaf_node_drops_every_address_of_its_peer() {
        let lan: IpAddr = "172.30.0.5".parse().unwrap();
        let link: IpAddr = "172.31.0.5".parse().unwrap();
        assert_eq!(
            Rule::deaf_to(&[lan, link]).0.join(" "),
            "INPUT -s 172.30.0.5,172.31.0.5 -j DROP"
        );
    }

    #[test]
    fn a_lossy_link_drops_its_share_by_chance() {
        assert_eq!(
            Rule::losing(25).0.join(" "),
            "INPUT -m statistic --mode random --probability 0.25 -j DROP"
        );
        assert!(Rule::losing(5).0.contains(&"0.05".to_string()));
    }
}
