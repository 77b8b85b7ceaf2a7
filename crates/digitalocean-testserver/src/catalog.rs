//! The fixed catalog the server offers: regions, sizes and images, shaped like DigitalOcean's.

use serde_json::{Value, json};

/// A region the server knows.
#[derive(Debug, Clone, Copy)]
pub struct RegionEntry {
    /// Slug (`fra1`).
    pub slug: &'static str,
    /// Display name.
    pub name: &'static str,
}

/// Regions: the seven DigitalOcean regions peerfleet's cities map to, plus two more.
pub const REGIONS: &[RegionEntry] = &[
    RegionEntry { slug: "ams3", name: "Amsterdam 3" },
    RegionEntry { slug: "blr1", name: "Bangalore 1" },
    RegionEntry { slug: "fra1", name: "Frankfurt 1" },
    RegionEntry { slug: "lon1", name: "London 1" },
    RegionEntry { slug: "nyc3", name: "New York 3" },
    RegionEntry { slug: "sfo3", name: "San Francisco 3" },
    RegionEntry { slug: "sgp1", name: "Singapore 1" },
    RegionEntry { slug: "syd1", name: "Sydney 1" },
    RegionEntry { slug: "tor1", name: "Toronto 1" },
];

/// A droplet size.
#[derive(Debug, Clone, Copy)]
pub struct SizeEntry {
    /// Slug.
    pub slug: &'static str,
    /// Memory in MiB.
    pub memory: u64,
    /// vCPUs.
    pub vcpus: u64,
    /// Disk in GiB.
    pub disk: u64,
    /// Monthly price in USD.
    pub price_monthly: f64,
}

/// Sizes, all available in every region of [`REGIONS`].
pub const SIZES: &[SizeEntry] = &[
    SizeEntry { slug: "s-1vcpu-1gb", memory: 1024, vcpus: 1, disk: 25, price_monthly: 6.0 },
    SizeEntry { slug: "s-1vcpu-2gb", memory: 2048, vcpus: 1, disk: 50, price_monthly: 12.0 },
    SizeEntry { slug: "s-2vcpu-2gb", memory: 2048, vcpus: 2, disk: 60, price_monthly: 18.0 },
    SizeEntry { slug: "s-2vcpu-4gb", memory: 4096, vcpus: 2, disk: 80, price_monthly: 24.0 },
    SizeEntry { slug: "s-4vcpu-8gb", memory: 8192, vcpus: 4, disk: 160, price_monthly: 48.0 },
];

/// A base image.
#[derive(Debug, Clone, Copy)]
pub struct ImageEntry {
    /// Numeric ID.
    pub id: u64,
    /// Slug.
    pub slug: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Distribution (one of the description's enum values).
    pub distribution: &'static str,
}

/// Images.
pub const IMAGES: &[ImageEntry] = &[
    ImageEntry { id: 170_000_012, slug: "debian-12-x64", name: "12 x64", distribution: "Debian" },
    ImageEntry { id: 170_000_013, slug: "debian-13-x64", name: "13 x64", distribution: "Debian" },
    ImageEntry { id: 170_002_404, slug: "ubuntu-24-04-x64", name: "24.04 (LTS) x64", distribution: "Ubuntu" },
];

/// The region called `slug`.
pub fn region(slug: &str) -> Option<&'static RegionEntry> {
    REGIONS.iter().find(|r| r.slug == slug)
}

/// The size called `slug`.
pub fn size(slug: &str) -> Option<&'static SizeEntry> {
    SIZES.iter().find(|s| s.slug == slug)
}

/// The image with this slug or numeric ID.
pub fn image(key: &Value) -> Option<&'static ImageEntry> {
    match key {
        Value::String(s) => IMAGES.iter().find(|i| i.slug == s),
        Value::Number(n) => IMAGES.iter().find(|i| Some(i.id) == n.as_u64()),
        _ => None,
    }
}

fn all_size_slugs() -> Vec<&'static str> {
    SIZES.iter().map(|s| s.slug).collect()
}

fn all_region_slugs() -> Vec<&'static str> {
    REGIONS.iter().map(|r| r.slug).collect()
}

/// A region object.
pub fn region_json(r: &RegionEntry) -> Value {
    json!({
        "name": r.name,
        "slug": r.slug,
        "features": ["backups", "ipv6", "metadata", "install_agent", "storage"],
        "available": true,
        "sizes": all_size_slugs(),
    })
}

/// A size object.
pub fn size_json(s: &SizeEntry) -> Value {
    json!({
        "slug": s.slug,
        "memory": s.memory,
        "vcpus": s.vcpus,
        "disk": s.disk,
        "transfer": 1.0,
        "price_monthly": s.price_monthly,
        "price_hourly": (s.price_monthly / 672.0 * 1e6).round() / 1e6,
        "regions": all_region_slugs(),
        "available": true,
        "description": "Basic",
        "disk_info": [{ "type": "local", "size": { "amount": s.disk, "unit": "gib" } }],
    })
}

/// An image object.
pub fn image_json(i: &ImageEntry) -> Value {
    json!({
        "id": i.id,
        "name": i.name,
        "type": "base",
        "distribution": i.distribution,
        "slug": i.slug,
        "public": true,
        "regions": all_region_slugs(),
        "created_at": "2025-01-01T00:00:00Z",
        "min_disk_size": 10,
        "size_gigabytes": 2.5,
        "status": "available",
    })
}
