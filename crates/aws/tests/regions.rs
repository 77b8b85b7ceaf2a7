//! The eight AWS regions of the nine cities, `cn-north-1` (partition `aws-cn`) included.

use anyhow::ensure;
use peerfleet_aws::Partition;
use peerfleet_aws::testing::{DEBIAN_AMI, DEBIAN_AMI_CN, EIGHT_REGIONS};
use peerfleet_core::provider::MachineProvider;

use crate::support::{Harness, bounded};

#[tokio::test]
async fn machines_in_all_eight_aws_regions_including_cn_north_1() -> anyhow::Result<()> {
    bounded(async {
        let Some(h) = Harness::start("machines_in_all_eight_aws_regions").await? else { return Ok(()) };
        for region in EIGHT_REGIONS {
            let fw = h.provider.create_firewall(&h.firewall(region)).await?;
            let m = h.provider.create_machine(&h.machine(region, 0, region), &h.ctx(&fw)).await?;
            let want = if Partition::of(region) == Partition::AwsCn { DEBIAN_AMI_CN } else { DEBIAN_AMI };
            ensure!(m.image == want, "{region}: the partition's Debian publisher, got {}", m.image);
        }
        for region in EIGHT_REGIONS {
            let inv = h.provider.inventory(&h.network, region).await?;
            ensure!(inv.machines.len() == 1 && inv.firewalls.len() == 1, "{region}: {inv:#?}");
            ensure!(
                inv.machines[0].region == region
                    && inv.machines[0].address.to_string() == format!("machine.{region}[0]")
            );
        }
        // Every request was signed for, and sent to, its own region.
        let runs = h.proxy.requests_of("RunInstances");
        let mut regions: Vec<_> = runs.iter().filter_map(|r| r.region.clone()).collect();
        regions.sort();
        let mut want: Vec<_> = EIGHT_REGIONS.iter().map(|r| r.to_string()).collect();
        want.sort();
        ensure!(regions == want, "{regions:?}");
        for region in EIGHT_REGIONS {
            for m in h.provider.inventory(&h.network, region).await?.machines {
                h.provider.delete_machine(&m).await?;
            }
        }
        Ok(())
    })
    .await
}
