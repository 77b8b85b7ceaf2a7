//! How an [`crate::AwsProvider`] reaches AWS: endpoints, credentials profiles, default images, retries
//! and waits.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_ec2::config::SharedCredentialsProvider;
use peerfleet_core::bootstrap::BootstrapOptions;
use peerfleet_core::provider::{ErrorKind, ProviderError};
use peerfleet_core::retry::{Backoff, RetryPolicy};
use peerfleet_core::{Network, ProviderKind};

/// An AWS partition: a separate copy of AWS with its own accounts, credentials and endpoints.
///
/// `cn-north-1` (Beijing) lives in `aws-cn`: credentials of the global `aws` partition are not valid
/// there, so a network spanning both needs a second profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Partition {
    /// The global partition.
    Aws,
    /// China (Beijing, Ningxia).
    AwsCn,
    /// AWS GovCloud (US).
    AwsUsGov,
}

impl Partition {
    /// The partition `region` belongs to, from the region name's prefix (how AWS names them).
    pub fn of(region: &str) -> Self {
        if region.starts_with("cn-") {
            Partition::AwsCn
        } else if region.starts_with("us-gov-") {
            Partition::AwsUsGov
        } else {
            Partition::Aws
        }
    }

    /// The partition's name as AWS writes it in ARNs.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the default machine image of a region is found: the newest available image whose name matches
/// `name_pattern`, published by one of `owners` (`DescribeImages`). Images differ per region and change
/// with every point release, so nothing is hard-coded but the publisher and the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLookup {
    /// Publisher account IDs (or aliases such as `amazon`).
    pub owners: Vec<String>,
    /// `DescribeImages` name filter; `*` matches anything.
    pub name_pattern: String,
    /// CPU architecture (`x86_64`, `arm64`); it must match the instance sizes used.
    pub architecture: String,
}

impl ImageLookup {
    /// Debian's publisher account in the global partition.
    pub const DEBIAN_OWNER: &'static str = "136693071363";
    /// The account that publishes Debian images in the `aws-cn` partition (Debian does not publish
    /// there itself).
    pub const DEBIAN_OWNER_CN: &'static str = "336777782633";
    /// Debian 12 (bookworm) for amd64, as Debian names its images.
    pub const DEBIAN_12_AMD64: &'static str = "debian-12-amd64-*";

    /// Debian 12 for amd64 in `partition` (the bootstrap installs Debian's `docker.io`).
    pub fn debian_12(partition: Partition) -> Self {
        let owner = match partition {
            Partition::AwsCn => Self::DEBIAN_OWNER_CN,
            Partition::Aws | Partition::AwsUsGov => Self::DEBIAN_OWNER,
        };
        ImageLookup {
            owners: vec![owner.to_string()],
            name_pattern: Self::DEBIAN_12_AMD64.to_string(),
            architecture: "x86_64".to_string(),
        }
    }
}

/// How long one request may take. Retries of single requests are configured by
/// [`AwsSettings::retry`] (peerfleet's one [`RetryPolicy`]) and done by the SDK's standard retry
/// strategy, the one retry layer of every EC2 request (see [`peerfleet_core::retry`]): it retries
/// throttling (`RequestLimitExceeded`, `Throttling`), 5xx responses, timeouts and connection
/// failures, and a request with a `ClientToken` keeps its token across retries, so a retried
/// `RunInstances` cannot launch twice. Only when the attempts are used up does the error reach the
/// executor, classified (see `crate::error`); the executor does not retry this provider's calls
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long connecting may take.
    pub connect: Duration,
    /// How long one attempt (send to parsed response) may take, so a hung endpoint fails fast.
    pub attempt: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_secs(10), attempt: Duration::from_secs(60) }
    }
}

/// Bounds on the provider's own waits. Every wait polls with doubling intervals from `first_poll` up
/// to `max_poll` and fails with a transient error at its bound; none waits forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waits {
    /// How long `InvalidInstanceID.NotFound` for an instance just launched counts as "not visible
    /// yet" (EC2's API is eventually consistent) rather than "gone".
    pub visibility: Duration,
    /// How long to wait for an instance to be `running` (an Elastic IP can only be associated then).
    pub running: Duration,
    /// How long to wait for a terminated instance to reach `terminated`.
    pub terminated: Duration,
    /// How long a security group still referenced by terminating instances (`DependencyViolation`) is
    /// retried before the delete fails as a conflict.
    pub dependency: Duration,
    /// First poll interval.
    pub first_poll: Duration,
    /// Largest poll interval.
    pub max_poll: Duration,
}

impl Waits {
    /// Polls from `first_poll`, doubling up to `max_poll`, giving up `bound` from now.
    pub(crate) fn poll(&self, bound: Duration) -> Backoff {
        Backoff::bounded(self.first_poll, self.max_poll, bound)
    }
}

impl Default for Waits {
    fn default() -> Self {
        Waits {
            visibility: Duration::from_secs(60),
            running: Duration::from_secs(300),
            terminated: Duration::from_secs(600),
            dependency: Duration::from_secs(180),
            first_poll: Duration::from_secs(1),
            max_poll: Duration::from_secs(15),
        }
    }
}

/// Everything an [`crate::AwsProvider`] is configured with. `AwsSettings::default()` is "from the
/// environment": the default credentials chain, `AWS_ENDPOINT_URL` (read by `aws-config` itself),
/// Debian 12 images, the SDK's standard retries.
#[derive(Clone)]
pub struct AwsSettings {
    /// Send every request here instead of AWS (a stand-in such as moto). When `None`, `aws-config`
    /// still honours `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_EC2` and the profile's `endpoint_url`.
    pub endpoint_url: Option<String>,
    /// Credentials profile per region (from the clusters' `profile`); wins over `partition_profiles`.
    pub region_profiles: BTreeMap<String, String>,
    /// Credentials profile per partition, for regions without their own (e.g. one profile for all of
    /// `aws-cn`).
    pub partition_profiles: BTreeMap<Partition, String>,
    /// Credentials to use instead of the default chain (tests use static dummy keys). Never printed.
    pub credentials: Option<SharedCredentialsProvider>,
    /// How default images are found, per partition; a partition without an entry has no default and
    /// machines there need an explicit image.
    pub images: BTreeMap<Partition, ImageLookup>,
    /// Per-request retries, done by the SDK (`base` is its first backoff, `cap` its largest;
    /// `max_wait` does not apply: EC2 sends no retry hint).
    pub retry: RetryPolicy,
    /// Per-request time bounds.
    pub timeouts: Timeouts,
    /// Bounds on waits.
    pub waits: Waits,
    /// What the machines' user data sets up.
    pub bootstrap: BootstrapOptions,
}

impl Default for AwsSettings {
    fn default() -> Self {
        let images = [Partition::Aws, Partition::AwsCn, Partition::AwsUsGov]
            .into_iter()
            .map(|p| (p, ImageLookup::debian_12(p)))
            .collect();
        AwsSettings {
            endpoint_url: None,
            region_profiles: BTreeMap::new(),
            partition_profiles: BTreeMap::new(),
            credentials: None,
            images,
            // The SDK's first backoff and cap as they were before the policy was shared.
            retry: RetryPolicy {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(20),
                ..RetryPolicy::default()
            },
            timeouts: Timeouts::default(),
            waits: Waits::default(),
            bootstrap: BootstrapOptions::default(),
        }
    }
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("endpoint_url", &self.endpoint_url)
            .field("region_profiles", &self.region_profiles)
            .field("partition_profiles", &self.partition_profiles)
            .field("credentials", &self.credentials.as_ref().map(|_| "<explicit>"))
            .field("images", &self.images)
            .field("retry", &self.retry)
            .field("timeouts", &self.timeouts)
            .field("waits", &self.waits)
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl AwsSettings {
    /// Takes each AWS cluster's `profile` as the profile of its region, so refresh (which knows only
    /// the region) uses the same account as create.
    ///
    /// # Errors
    /// `Invalid` when two clusters in one region name different profiles: one region's inventory can
    /// only be read with one account.
    pub fn with_network_profiles(mut self, network: &Network) -> Result<Self, ProviderError> {
        for cluster in network.clusters.iter().filter(|c| c.provider == ProviderKind::Aws) {
            let Some(profile) = &cluster.profile else { continue };
            let region = &cluster.region.slug;
            match self.region_profiles.get(region) {
                Some(existing) if existing != profile => {
                    return Err(ProviderError::new(
                        ErrorKind::Invalid,
                        "aws",
                        format!(
                            "cluster `{}` uses profile `{profile}` in {region}, but another cluster there uses \
                             `{existing}`: one region is read with one account",
                            cluster.name
                        ),
                    ));
                }
                _ => {
                    self.region_profiles.insert(region.clone(), profile.clone());
                }
            }
        }
        Ok(self)
    }

    /// The SDK configuration every client (EC2, S3) is built from: `region` (or the default region
    /// chain when `None`), `profile` (or the default credentials chain), the endpoint override, the
    /// explicit credentials, and the retry policy and timeouts (the SDK's retry is the one retry
    /// layer of each request, S3 state requests included). Loading reads environment and profile
    /// files only; credentials resolve on the first request.
    pub(crate) async fn sdk_config(
        &self,
        region: Option<&str>,
        profile: Option<&str>,
    ) -> aws_config::SdkConfig {
        use aws_config::retry::RetryConfig;
        use aws_config::timeout::TimeoutConfig;
        let (retry, timeouts) = (&self.retry, &self.timeouts);
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(retry.max_attempts.max(1))
                    .with_initial_backoff(retry.base)
                    .with_max_backoff(retry.cap),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeouts.connect)
                    .operation_attempt_timeout(timeouts.attempt)
                    .build(),
            );
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.to_string()));
        }
        if let Some(profile) = profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(credentials) = &self.credentials {
            loader = loader.credentials_provider(credentials.clone());
        }
        loader.load().await
    }

    /// The profile requests to `region` use: the region's, else its partition's, else `None` (the
    /// default chain).
    pub fn profile_for(&self, region: &str) -> Option<&str> {
        self.region_profiles
            .get(region)
            .or_else(|| self.partition_profiles.get(&Partition::of(region)))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn china_regions_are_their_own_partition() {
        assert_eq!(Partition::of("cn-north-1"), Partition::AwsCn);
        assert_eq!(Partition::of("cn-northwest-1"), Partition::AwsCn);
        assert_eq!(Partition::of("us-gov-west-1"), Partition::AwsUsGov);
        for r in ["us-east-1", "us-west-2", "eu-central-1", "eu-west-2", "ap-southeast-1", "sa-east-1"] {
            assert_eq!(Partition::of(r), Partition::Aws, "{r}");
        }
    }

    #[test]
    fn region_profile_wins_over_partition_profile() {
        let mut s = AwsSettings::default();
        s.partition_profiles.insert(Partition::AwsCn, "china".into());
        assert_eq!(s.profile_for("cn-north-1"), Some("china"));
        assert_eq!(s.profile_for("us-east-1"), None);
        s.region_profiles.insert("cn-north-1".into(), "beijing".into());
        assert_eq!(s.profile_for("cn-north-1"), Some("beijing"));
    }

    fn network(clusters: &[(&str, &str, Option<&str>)]) -> Network {
        use peerfleet_core::network::{Access, Chain, Cluster, Region};
        Network {
            name: "n".into(),
            chain: Chain::from_genesis(b"g".to_vec(), None),
            clusters: clusters
                .iter()
                .map(|(name, region, profile)| Cluster {
                    name: name.to_string(),
                    provider: ProviderKind::Aws,
                    region: Region { slug: region.to_string(), city: None },
                    size: "t3.micro".into(),
                    image: None,
                    nodes: 1,
                    tags: Default::default(),
                    profile: profile.map(str::to_string),
                    update: Default::default(),
                })
                .collect(),
            services: Vec::new(),
            access: Access::default(),
            state: Default::default(),
        }
    }

    #[test]
    fn cluster_profiles_become_region_profiles() {
        let n = network(&[("beijing", "cn-north-1", Some("china")), ("virginia", "us-east-1", None)]);
        let s = AwsSettings::default().with_network_profiles(&n);
        let s = s.as_ref().map(|s| (s.profile_for("cn-north-1"), s.profile_for("us-east-1")));
        assert_eq!(s.ok(), Some((Some("china"), None)));
    }

    #[test]
    fn two_profiles_in_one_region_are_refused() {
        let n = network(&[("a", "cn-north-1", Some("china")), ("b", "cn-north-1", Some("other"))]);
        let err = AwsSettings::default().with_network_profiles(&n).err().map(|e| (e.kind, e.message));
        assert!(
            matches!(&err, Some((ErrorKind::Invalid, m)) if m.contains("`other`") && m.contains("`china`")),
            "{err:?}"
        );
    }

    #[test]
    fn default_images_differ_by_partition_publisher() {
        let s = AwsSettings::default();
        assert_eq!(s.images[&Partition::Aws].owners, vec![ImageLookup::DEBIAN_OWNER.to_string()]);
        assert_eq!(s.images[&Partition::AwsCn].owners, vec![ImageLookup::DEBIAN_OWNER_CN.to_string()]);
    }
}
