//! The region catalog: the nine cities of the original network and the providers' region slugs.
//!
//! Pure data, so that `validate` can tell a person at once that DigitalOcean has no São Paulo, and
//! which providers do, without asking any API. Lists of slugs are static on purpose: a typo in a
//! region must fail before anything is created, and a new provider region is a one-line change here.

use crate::network::{City, ProviderKind, Region};

/// One of the nine cities and where each provider serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CityEntry {
    /// The city.
    pub city: City,
    /// Its name as written in specs and messages (`São Paulo`).
    pub name: &'static str,
    /// Other accepted spellings (`Sao Paulo`, `Beijing`); matching ignores case.
    pub aliases: &'static [&'static str],
    /// Its slug, which is also the `local` provider's region name (`sao-paulo`).
    pub slug: &'static str,
    /// The AWS region, if AWS serves the city.
    pub aws: Option<&'static str>,
    /// The DigitalOcean region, if DigitalOcean serves the city.
    pub digitalocean: Option<&'static str>,
    /// The DigitalOcean region nearest to the city when DigitalOcean does not serve it.
    pub digitalocean_nearest: Option<&'static str>,
}

impl CityEntry {
    /// The city's region slug on `provider`, if the provider serves it (`local` serves every city).
    pub fn slug_for(&self, provider: ProviderKind) -> Option<&'static str> {
        match provider {
            ProviderKind::Aws => self.aws,
            ProviderKind::DigitalOcean => self.digitalocean,
            ProviderKind::Local => Some(self.slug),
        }
    }

    /// Every provider that serves the city, with its slug, in [`ProviderKind::ALL`] order.
    pub fn served_by(&self) -> Vec<(ProviderKind, &'static str)> {
        ProviderKind::ALL.into_iter().filter_map(|p| Some((p, self.slug_for(p)?))).collect()
    }

    /// Whether `name` is this city's name, an alias or its slug, ignoring case.
    fn is_called(&self, name: &str) -> bool {
        std::iter::once(self.name)
            .chain(self.aliases.iter().copied())
            .chain(std::iter::once(self.slug))
            .any(|n| n.to_lowercase() == name.trim().to_lowercase())
    }
}

// The table "The nine regions of the original network" of docs/architecture.md, in its order.
const CITIES: [CityEntry; 9] = [
    CityEntry {
        city: City::NorthernChina,
        name: "Northern China",
        aliases: &["Beijing"],
        slug: "northern-china",
        aws: Some("cn-north-1"),
        digitalocean: None,
        digitalocean_nearest: None,
    },
    CityEntry {
        city: City::Singapore,
        name: "Singapore",
        aliases: &[],
        slug: "singapore",
        aws: Some("ap-southeast-1"),
        digitalocean: Some("sgp1"),
        digitalocean_nearest: None,
    },
    CityEntry {
        city: City::Sydney,
        name: "Sydney",
        aliases: &[],
        slug: "sydney",
        aws: Some("ap-southeast-2"),
        digitalocean: Some("syd1"),
        digitalocean_nearest: None,
    },
    CityEntry {
        city: City::Frankfurt,
        name: "Frankfurt",
        aliases: &[],
        slug: "frankfurt",
        aws: Some("eu-central-1"),
        digitalocean: Some("fra1"),
        digitalocean_nearest: None,
    },
    CityEntry {
        city: City::Amsterdam,
        name: "Amsterdam",
        aliases: &[],
        slug: "amsterdam",
        aws: None,
        digitalocean: Some("ams3"),
        digitalocean_nearest: None,
    },
    CityEntry {
        city: City::London,
        name: "London",
        aliases: &[],
        slug: "london",
        aws: Some("eu-west-2"),
        digitalocean: Some("lon1"),
        digitalocean_nearest: None,
    },
    CityEntry {
        city: City::Virginia,
        name: "Virginia",
        aliases: &[],
        slug: "virginia",
        aws: Some("us-east-1"),
        digitalocean: None,
        digitalocean_nearest: Some("nyc3"),
    },
    CityEntry {
        city: City::Oregon,
        name: "Oregon",
        aliases: &[],
        slug: "oregon",
        aws: Some("us-west-2"),
        digitalocean: None,
        digitalocean_nearest: Some("sfo3"),
    },
    CityEntry {
        city: City::SaoPaulo,
        name: "São Paulo",
        aliases: &["Sao Paulo"],
        slug: "sao-paulo",
        aws: Some("sa-east-1"),
        digitalocean: None,
        digitalocean_nearest: None,
    },
];

/// AWS region codes accepted in specs: the commercial regions and the two of the `aws-cn` partition.
/// GovCloud is left out on purpose: it needs its own partition, accounts and review.
pub const AWS_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
];

/// DigitalOcean region slugs accepted in specs (datacenters that take new droplets).
pub const DIGITALOCEAN_REGIONS: &[&str] =
    &["ams3", "atl1", "blr1", "fra1", "lon1", "nyc1", "nyc2", "nyc3", "sfo2", "sfo3", "sgp1", "syd1", "tor1"];

/// The nine cities, in the order of the table in docs/architecture.md.
pub fn cities() -> &'static [CityEntry] {
    &CITIES
}

/// The catalog entry of `city`.
pub fn city(city: City) -> &'static CityEntry {
    // Invariant: CITIES has one entry per `City` variant (pinned by a test).
    CITIES.iter().find(|c| c.city == city).expect("every City has a catalog entry")
}

/// The city called `name` (its name, an alias, or its slug; case ignored).
pub fn find_city(name: &str) -> Option<&'static CityEntry> {
    CITIES.iter().find(|c| c.is_called(name))
}

/// The region slugs a provider accepts besides city names.
pub fn known_slugs(provider: ProviderKind) -> Vec<&'static str> {
    match provider {
        ProviderKind::Aws => AWS_REGIONS.to_vec(),
        ProviderKind::DigitalOcean => DIGITALOCEAN_REGIONS.to_vec(),
        ProviderKind::Local => CITIES.iter().map(|c| c.slug).collect(),
    }
}

/// The machine size used when a cluster gives none: the smallest size that runs the reference node.
pub fn default_size(provider: ProviderKind) -> &'static str {
    match provider {
        ProviderKind::Aws => "t3.micro",
        ProviderKind::DigitalOcean => "s-1vcpu-1gb",
        ProviderKind::Local => "virtual",
    }
}

/// Resolves a region as written in a spec (a city name or a provider slug) for `provider`.
///
/// `city` is set when the region is the city's own region on that provider (`us-east-1` is
/// Virginia on AWS; `nyc3` is only DigitalOcean's nearest to Virginia, so it has no city).
///
/// # Errors
/// [`RegionError::NotServed`] for a city the provider does not serve (naming who does), and
/// [`RegionError::Unknown`] for anything that is neither a city nor one of the provider's slugs.
pub fn resolve(provider: ProviderKind, region: &str) -> Result<Region, RegionError> {
    if let Some(entry) = find_city(region) {
        // A slug of the `local` provider is also a city name; for the others it must be a city.
        return match entry.slug_for(provider) {
            Some(slug) => Ok(Region { slug: slug.to_string(), city: Some(entry.city) }),
            None => Err(RegionError::NotServed {
                region: region.to_string(),
                provider,
                served_by: entry.served_by(),
                nearest: match provider {
                    ProviderKind::DigitalOcean => entry.digitalocean_nearest,
                    _ => None,
                },
            }),
        };
    }
    let slug = region.trim().to_ascii_lowercase();
    if !known_slugs(provider).contains(&slug.as_str()) {
        return Err(RegionError::Unknown { region: region.to_string(), provider });
    }
    let city = CITIES.iter().find(|c| c.slug_for(provider) == Some(slug.as_str())).map(|c| c.city);
    Ok(Region { slug, city })
}

/// A region a cluster cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// One of the nine cities, which the provider does not serve.
    #[error(
        "region {} is not served by {provider}; it is served by: {}{}",
        super::error::quoted(region),
        served_by.iter().map(|(p, s)| format!("{p} ({s})")).collect::<Vec<_>>().join(", "),
        nearest.map(|n| format!("; the nearest {provider} region is {n}")).unwrap_or_default()
    )]
    NotServed {
        /// The region as written.
        region: String,
        /// The cluster's provider.
        provider: ProviderKind,
        /// The providers that serve the city, with their slugs.
        served_by: Vec<(ProviderKind, &'static str)>,
        /// The provider's nearest region, when the catalog knows one.
        nearest: Option<&'static str>,
    },
    /// Neither a city nor a slug the provider knows.
    #[error("expected one of the nine cities ({}) or {}, found {}", city_names(), slug_hint(*provider), super::error::quoted(region))]
    Unknown {
        /// The region as written.
        region: String,
        /// The cluster's provider.
        provider: ProviderKind,
    },
}

fn city_names() -> String {
    CITIES.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
}

fn slug_hint(provider: ProviderKind) -> String {
    match provider {
        // Thirty-odd codes would drown the message; the reference page lists them.
        ProviderKind::Aws => {
            "an aws region code such as eu-west-1 (see the spec reference for the list)".into()
        }
        p => format!("a {p} region ({})", known_slugs(p).join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_city_has_exactly_one_entry() {
        use City::*;
        for c in [NorthernChina, Singapore, Sydney, Frankfurt, Amsterdam, London, Virginia, Oregon, SaoPaulo]
        {
            assert_eq!(CITIES.iter().filter(|e| e.city == c).count(), 1, "{c:?}");
            assert_eq!(city(c).city, c);
        }
    }

    #[test]
    fn city_slugs_are_known_slugs_of_their_providers() {
        for entry in cities() {
            for (provider, slug) in entry.served_by() {
                assert!(known_slugs(provider).contains(&slug), "{provider} {slug}");
            }
            if let Some(n) = entry.digitalocean_nearest {
                assert!(DIGITALOCEAN_REGIONS.contains(&n));
            }
        }
    }

    #[test]
    fn city_names_resolve_case_insensitively_with_aliases() {
        let r = |p, s| resolve(p, s).unwrap();
        assert_eq!(
            r(ProviderKind::Aws, "virginia"),
            Region { slug: "us-east-1".into(), city: Some(City::Virginia) }
        );
        assert_eq!(r(ProviderKind::Aws, "Sao Paulo").slug, "sa-east-1");
        assert_eq!(r(ProviderKind::Aws, "SÃO PAULO").slug, "sa-east-1");
        assert_eq!(
            r(ProviderKind::Aws, "Beijing"),
            Region { slug: "cn-north-1".into(), city: Some(City::NorthernChina) }
        );
        assert_eq!(r(ProviderKind::DigitalOcean, "Amsterdam").slug, "ams3");
        assert_eq!(
            r(ProviderKind::Local, "Northern China"),
            Region { slug: "northern-china".into(), city: Some(City::NorthernChina) }
        );
        assert_eq!(r(ProviderKind::Local, "sao-paulo").city, Some(City::SaoPaulo));
    }

    #[test]
    fn slugs_resolve_with_a_city_only_when_they_are_the_citys_region() {
        let r = |p, s| resolve(p, s).unwrap();
        assert_eq!(r(ProviderKind::Aws, "us-east-1").city, Some(City::Virginia));
        assert_eq!(r(ProviderKind::Aws, "US-EAST-2"), Region { slug: "us-east-2".into(), city: None });
        assert_eq!(r(ProviderKind::DigitalOcean, "fra1").city, Some(City::Frankfurt));
        // nyc3 is only the nearest to Virginia, not Virginia.
        assert_eq!(r(ProviderKind::DigitalOcean, "nyc3").city, None);
    }

    #[test]
    fn a_city_not_served_names_the_providers_that_serve_it() {
        let e = resolve(ProviderKind::Aws, "Amsterdam").unwrap_err();
        assert_eq!(
            e.to_string(),
            "region \"Amsterdam\" is not served by aws; it is served by: digitalocean (ams3), local (amsterdam)"
        );
        let e = resolve(ProviderKind::DigitalOcean, "Virginia").unwrap_err();
        assert_eq!(
            e.to_string(),
            "region \"Virginia\" is not served by digitalocean; it is served by: aws (us-east-1), local \
             (virginia); the nearest digitalocean region is nyc3"
        );
    }

    #[test]
    fn unknown_regions_and_other_providers_slugs_are_rejected() {
        assert!(matches!(resolve(ProviderKind::Aws, "mars-1"), Err(RegionError::Unknown { .. })));
        assert!(matches!(resolve(ProviderKind::Aws, "fra1"), Err(RegionError::Unknown { .. })));
        assert!(matches!(
            resolve(ProviderKind::DigitalOcean, "eu-central-1"),
            Err(RegionError::Unknown { .. })
        ));
        assert!(matches!(resolve(ProviderKind::Local, "us-east-1"), Err(RegionError::Unknown { .. })));
        let e = resolve(ProviderKind::DigitalOcean, "xyz").unwrap_err().to_string();
        assert!(e.contains("a digitalocean region (ams3, atl1,"), "{e}");
        assert!(e.ends_with("found \"xyz\""), "{e}");
    }
}
