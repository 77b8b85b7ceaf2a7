//! The default machine image of a region, looked up by publisher and name (`DescribeImages`).

use aws_sdk_ec2::types::{Filter, Image};
use peerfleet_core::provider::ProviderError;

use crate::client::{AwsProvider, Ec2, invalid};
use crate::error::classify;

/// The newest image (by creation date, then ID for a stable tie-break).
fn newest<'a>(images: impl Iterator<Item = &'a Image>) -> Option<&'a Image> {
    images.filter(|i| i.image_id().is_some()).max_by(|a, b| {
        a.creation_date()
            .unwrap_or_default()
            .cmp(b.creation_date().unwrap_or_default())
            .then_with(|| a.image_id().cmp(&b.image_id()))
    })
}

impl AwsProvider {
    /// The region's default image: the newest available one matching the partition's
    /// [`crate::ImageLookup`]. Looked up once per region and profile, then cached.
    pub(crate) async fn default_image(&self, ec2: &Ec2) -> Result<String, ProviderError> {
        let key = (ec2.target.region.clone(), ec2.target.profile.clone());
        // Held across the lookup so concurrent creates in a region make one request, not one each.
        let mut cache = self.images.lock().await;
        if let Some(id) = cache.get(&key) {
            return Ok(id.clone());
        }
        let partition = ec2.target.partition();
        let lookup = self.settings.images.get(&partition).ok_or_else(|| {
            invalid(format!(
                "no default image is configured for partition {partition} (region {}): set the cluster's image",
                ec2.target.region
            ))
        })?;
        let filters = vec![
            Filter::builder().name("name").values(&lookup.name_pattern).build(),
            Filter::builder().name("architecture").values(&lookup.architecture).build(),
            Filter::builder().name("state").values("available").build(),
        ];
        let mut pages = ec2
            .client
            .describe_images()
            .set_owners(Some(lookup.owners.clone()))
            .set_filters(Some(filters))
            .into_paginator()
            .send();
        let mut images = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("DescribeImages", &ec2.target, e))?;
            images.extend(page.images().iter().cloned());
        }
        let id = newest(images.iter()).and_then(|i| i.image_id()).ok_or_else(|| {
            invalid(format!(
                "no available image named `{}` ({}) by owner {} in {}: set the cluster's image",
                lookup.name_pattern,
                lookup.architecture,
                lookup.owners.join(", "),
                ec2.target.region
            ))
        })?;
        tracing::debug!(region = %ec2.target.region, image = id, "default image");
        cache.insert(key, id.to_string());
        Ok(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, created: &str) -> Image {
        Image::builder().image_id(id).creation_date(created).build()
    }

    #[test]
    fn the_newest_image_wins_and_ties_break_by_id() {
        let images = [
            image("ami-old", "2024-01-01T00:00:00.000Z"),
            image("ami-b", "2025-06-01T00:00:00.000Z"),
            image("ami-a", "2025-06-01T00:00:00.000Z"),
        ];
        assert_eq!(newest(images.iter()).and_then(|i| i.image_id()), Some("ami-b"));
        assert_eq!(newest([].iter()).map(|i: &Image| i.image_id()), None);
    }
}
