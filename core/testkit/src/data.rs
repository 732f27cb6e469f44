//! Word lists for generated records: varied enough to exercise mapping (accents, apostrophes, hyphens,
//! several countries and phone formats), small enough to keep seeding fast.

pub(crate) const FIRST_NAMES: &[&str] = &[
    "Alice",
    "Bob",
    "Carla",
    "Dmitri",
    "Elena",
    "François",
    "Grace",
    "Hiro",
    "Ines",
    "Jamal",
    "Katarzyna",
    "Liam",
    "María",
    "Noah",
    "Olivia",
    "Pierre",
    "Quinn",
    "Rosa",
    "Sven",
    "Tomás",
    "Uma",
    "Viktor",
    "Wei",
    "Xavier",
    "Yara",
    "Zoë",
    "Aisha",
    "Bjørn",
    "Chloé",
    "Diego",
    "Emma",
    "Felix",
    "Giulia",
    "Hannah",
    "Ivan",
    "Jonas",
    "Kenji",
    "Lucía",
    "Mohammed",
    "Nora",
    "Oscar",
    "Priya",
    "Rafael",
    "Sofia",
    "Théo",
    "Anne-Marie",
    "Jean-Luc",
    "Seán",
    "Zoltán",
    "Ngozi",
];

pub(crate) const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "García",
    "Müller",
    "O'Brien",
    "Nguyen",
    "Kowalski",
    "Rossi",
    "Dubois",
    "Tanaka",
    "Andersson",
    "Silva",
    "Ivanova",
    "Patel",
    "Kim",
    "van der Berg",
    "López",
    "Martin",
    "Schmidt",
    "Novák",
    "Jensen",
    "Papadopoulos",
    "Brown",
    "Wilson",
    "Taylor",
    "Moreau",
    "Fischer",
    "Costa",
    "Hernández",
    "Lee",
    "Okafor",
    "Larsen",
    "Weber",
    "Bianchi",
    "Santos",
    "Walker",
    "Wright",
    "Clarke",
    "Dupont",
    "Nakamura",
    "Smith-Jones",
    "Ó Súilleabháin",
    "Yılmaz",
    "Kovač",
    "Haddad",
];

pub(crate) const EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.co.uk",
    "icloud.com",
    "proton.me",
    "gmx.de",
    "orange.fr",
    "example.com",
    "example.org",
    "acme.io",
    "globex.com",
    "initech.net",
];

/// A place: city, province, province code, country, country code, phone prefix (E.164 country code).
pub(crate) struct Place {
    pub city: &'static str,
    pub province: Option<&'static str>,
    pub province_code: Option<&'static str>,
    pub country: &'static str,
    pub country_code: &'static str,
    pub calling_code: &'static str,
    pub currency: &'static str,
}

pub(crate) const PLACES: &[Place] = &[
    Place {
        city: "New York",
        province: Some("New York"),
        province_code: Some("NY"),
        country: "United States",
        country_code: "US",
        calling_code: "1",
        currency: "USD",
    },
    Place {
        city: "San Francisco",
        province: Some("California"),
        province_code: Some("CA"),
        country: "United States",
        country_code: "US",
        calling_code: "1",
        currency: "USD",
    },
    Place {
        city: "Austin",
        province: Some("Texas"),
        province_code: Some("TX"),
        country: "United States",
        country_code: "US",
        calling_code: "1",
        currency: "USD",
    },
    Place {
        city: "Chicago",
        province: Some("Illinois"),
        province_code: Some("IL"),
        country: "United States",
        country_code: "US",
        calling_code: "1",
        currency: "USD",
    },
    Place {
        city: "Toronto",
        province: Some("Ontario"),
        province_code: Some("ON"),
        country: "Canada",
        country_code: "CA",
        calling_code: "1",
        currency: "CAD",
    },
    Place {
        city: "Montréal",
        province: Some("Quebec"),
        province_code: Some("QC"),
        country: "Canada",
        country_code: "CA",
        calling_code: "1",
        currency: "CAD",
    },
    Place {
        city: "London",
        province: None,
        province_code: None,
        country: "United Kingdom",
        country_code: "GB",
        calling_code: "44",
        currency: "GBP",
    },
    Place {
        city: "Manchester",
        province: None,
        province_code: None,
        country: "United Kingdom",
        country_code: "GB",
        calling_code: "44",
        currency: "GBP",
    },
    Place {
        city: "Berlin",
        province: None,
        province_code: None,
        country: "Germany",
        country_code: "DE",
        calling_code: "49",
        currency: "EUR",
    },
    Place {
        city: "München",
        province: None,
        province_code: None,
        country: "Germany",
        country_code: "DE",
        calling_code: "49",
        currency: "EUR",
    },
    Place {
        city: "Paris",
        province: None,
        province_code: None,
        country: "France",
        country_code: "FR",
        calling_code: "33",
        currency: "EUR",
    },
    Place {
        city: "Lyon",
        province: None,
        province_code: None,
        country: "France",
        country_code: "FR",
        calling_code: "33",
        currency: "EUR",
    },
    Place {
        city: "Madrid",
        province: Some("Madrid"),
        province_code: Some("M"),
        country: "Spain",
        country_code: "ES",
        calling_code: "34",
        currency: "EUR",
    },
    Place {
        city: "Milano",
        province: Some("Milano"),
        province_code: Some("MI"),
        country: "Italy",
        country_code: "IT",
        calling_code: "39",
        currency: "EUR",
    },
    Place {
        city: "Amsterdam",
        province: None,
        province_code: None,
        country: "Netherlands",
        country_code: "NL",
        calling_code: "31",
        currency: "EUR",
    },
    Place {
        city: "Praha",
        province: None,
        province_code: None,
        country: "Czech Republic",
        country_code: "CZ",
        calling_code: "420",
        currency: "CZK",
    },
    Place {
        city: "Sydney",
        province: Some("New South Wales"),
        province_code: Some("NSW"),
        country: "Australia",
        country_code: "AU",
        calling_code: "61",
        currency: "AUD",
    },
    Place {
        city: "Tokyo",
        province: Some("Tokyo"),
        province_code: Some("JP-13"),
        country: "Japan",
        country_code: "JP",
        calling_code: "81",
        currency: "JPY",
    },
];

pub(crate) const STREETS: &[&str] = &[
    "Main Street",
    "High Street",
    "Rue de Rivoli",
    "Hauptstraße",
    "Calle Mayor",
    "Via Roma",
    "Elm Avenue",
    "Oak Lane",
    "King's Road",
    "Kerkstraat",
    "Market Square",
    "Harbour View",
    "Station Road",
    "Maple Drive",
];

pub(crate) const COMPANY_STEMS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Wonka",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Cyberdyne",
    "Tyrell",
    "Aperture",
    "Gringotts",
    "Monarch",
    "Nakatomi",
    "Pied Piper",
    "Dunder Mifflin",
    "Blue Sun",
    "Oscorp",
    "Massive Dynamic",
    "Prestige",
    "Sterling Cooper",
    "Bluth",
    "Kruger",
];

pub(crate) const COMPANY_SUFFIXES: &[&str] = &[
    "Inc.", "LLC", "GmbH", "S.A.", "Ltd", "Corp", "SARL", "B.V.", "AG", "",
];

pub(crate) const INDUSTRIES: &[&str] = &[
    "COMPUTER_SOFTWARE",
    "RETAIL",
    "FINANCIAL_SERVICES",
    "HOSPITAL_HEALTH_CARE",
    "MARKETING_AND_ADVERTISING",
    "CONSUMER_GOODS",
    "EDUCATION_MANAGEMENT",
    "INFORMATION_TECHNOLOGY_AND_SERVICES",
    "LOGISTICS_AND_SUPPLY_CHAIN",
    "FOOD_BEVERAGES",
];

pub(crate) const JOB_TITLES: &[&str] = &[
    "CEO",
    "CTO",
    "Marketing Manager",
    "Head of Growth",
    "Software Engineer",
    "Sales Director",
    "Office Manager",
    "Data Analyst",
    "Product Manager",
    "Customer Success Lead",
    "Founder",
    "VP Operations",
];

pub(crate) const LIFECYCLE_STAGES: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
];

pub(crate) const LEAD_STATUSES: &[&str] = &[
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "CONNECTED",
];

pub(crate) const TAG_SETS: &[&str] = &[
    "",
    "",
    "",
    "vip",
    "newsletter",
    "wholesale",
    "vip, newsletter",
    "returning, vip",
    "b2b, wholesale",
    "instagram",
    "Black Friday 2023",
    "loyalty-gold",
    "newsletter, sms",
];

/// A product: title, variant title, SKU, vendor, price in cents, grams.
pub(crate) struct Product {
    pub title: &'static str,
    pub variant: Option<&'static str>,
    pub sku: &'static str,
    pub vendor: &'static str,
    pub price_cents: i64,
    pub grams: u32,
}

pub(crate) const PRODUCTS: &[Product] = &[
    Product {
        title: "Classic T-Shirt",
        variant: Some("M / Black"),
        sku: "TS-CL-M-BLK",
        vendor: "Spindle Apparel",
        price_cents: 2500,
        grams: 180,
    },
    Product {
        title: "Classic T-Shirt",
        variant: Some("L / White"),
        sku: "TS-CL-L-WHT",
        vendor: "Spindle Apparel",
        price_cents: 2500,
        grams: 190,
    },
    Product {
        title: "Hoodie",
        variant: Some("S / Grey"),
        sku: "HD-S-GRY",
        vendor: "Spindle Apparel",
        price_cents: 5900,
        grams: 540,
    },
    Product {
        title: "Ceramic Mug",
        variant: None,
        sku: "MUG-CER-01",
        vendor: "Potters & Co",
        price_cents: 1450,
        grams: 350,
    },
    Product {
        title: "Espresso Beans 1kg",
        variant: Some("Dark roast"),
        sku: "COF-ESP-1KG",
        vendor: "Bean There",
        price_cents: 3299,
        grams: 1000,
    },
    Product {
        title: "Gift Card",
        variant: Some("$50"),
        sku: "GC-50",
        vendor: "Spindle Store",
        price_cents: 5000,
        grams: 0,
    },
    Product {
        title: "Leather Wallet",
        variant: Some("Brown"),
        sku: "WAL-LTH-BRN",
        vendor: "Hide & Seek",
        price_cents: 7900,
        grams: 120,
    },
    Product {
        title: "Running Socks (3 pack)",
        variant: Some("42-45"),
        sku: "SOC-RUN-3P",
        vendor: "Fast Feet",
        price_cents: 1899,
        grams: 90,
    },
    Product {
        title: "Notebook A5",
        variant: Some("Dotted"),
        sku: "NB-A5-DOT",
        vendor: "Paper Trail",
        price_cents: 1200,
        grams: 250,
    },
    Product {
        title: "Water Bottle",
        variant: Some("750 ml"),
        sku: "BTL-750",
        vendor: "Hydra",
        price_cents: 2999,
        grams: 300,
    },
    Product {
        title: "Sneakers",
        variant: Some("EU 42"),
        sku: "SNK-42",
        vendor: "Fast Feet",
        price_cents: 11900,
        grams: 900,
    },
    Product {
        title: "Scented Candle",
        variant: Some("Fig"),
        sku: "CND-FIG",
        vendor: "Glow",
        price_cents: 2200,
        grams: 400,
    },
];

use rand::Rng;

/// Lowercase ASCII for e-mail local parts and domains (`"François"` → `"francois"`, `"O'Brien"` → `"obrien"`).
pub(crate) fn ascii_slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.to_lowercase().chars() {
        let mapped = match c {
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
            'ç' | 'č' => "c",
            'è' | 'é' | 'ê' | 'ë' => "e",
            'ì' | 'í' | 'î' | 'ï' | 'ı' => "i",
            'ñ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => "o",
            'ù' | 'ú' | 'û' | 'ü' => "u",
            'ý' => "y",
            'ß' => "ss",
            'š' => "s",
            'ž' => "z",
            'ł' => "l",
            c if c.is_ascii_alphanumeric() => {
                out.push(c);
                continue;
            }
            '-' | ' ' => "-",
            _ => "",
        };
        out.push_str(mapped);
    }
    out.trim_matches('-').to_owned()
}

fn digits(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// A national number (without country code) of a plausible length for the place.
fn national_number(rng: &mut impl Rng, place: &Place) -> String {
    match place.calling_code {
        // North America: fictional 555-01xx numbers.
        "1" => format!(
            "{}{}5550{}",
            rng.random_range(2..10u8),
            digits(rng, 2),
            digits(rng, 3)
        ),
        "44" => format!("7{}", digits(rng, 9)),
        "49" => format!("15{}", digits(rng, 9)),
        "33" => format!("6{}", digits(rng, 8)),
        "81" => format!("90{}", digits(rng, 8)),
        "420" => format!("6{}", digits(rng, 8)),
        _ => format!("4{}", digits(rng, 8)),
    }
}

/// An E.164 number (`+14155550134`), as Shopify stores `customer.phone`.
pub(crate) fn phone_e164(rng: &mut impl Rng, place: &Place) -> String {
    format!("+{}{}", place.calling_code, national_number(rng, place))
}

/// A phone number as people type it: with or without country code, spaces, dashes, dots, parentheses.
pub(crate) fn phone_free(rng: &mut impl Rng, place: &Place) -> String {
    let national = national_number(rng, place);
    let code = place.calling_code;
    match (code, rng.random_range(0..5u8)) {
        ("1", 0) => format!(
            "({}) {}-{}",
            &national[..3],
            &national[3..6],
            &national[6..]
        ),
        ("1", 1) => format!(
            "+1 {}-{}-{}",
            &national[..3],
            &national[3..6],
            &national[6..]
        ),
        ("1", 2) => format!("{}.{}.{}", &national[..3], &national[3..6], &national[6..]),
        ("1", 3) => format!("1{national}"),
        (_, 0) => format!("+{code} {} {}", &national[..3], &national[3..]),
        (_, 1) => format!("00{code}{national}"),
        (_, 2) => format!("0{} {}", &national[..4], &national[4..]),
        (_, 3) => format!("+{code} (0){national}"),
        _ => format!("+{code}{national}"),
    }
}

/// A postal code in the place's national format.
pub(crate) fn postal_code(rng: &mut impl Rng, place: &Place) -> String {
    const LETTERS: &[u8] = b"ABCEGHJKLMNPRSTVWXYZ";
    let mut letter = || char::from(LETTERS[rng.random_range(0..LETTERS.len())]);
    let (a, b, c, d) = (letter(), letter(), letter(), letter());
    let mut digit = || rng.random_range(0..10u8);
    match place.country_code {
        "CA" => format!("{a}{}{b} {}{c}{}", digit(), digit(), digit()),
        "GB" => format!("{a}{b}{} {}{c}{d}", digit(), digit()),
        "NL" => format!("{}{}{}{} {c}{d}", digit().max(1), digit(), digit(), digit()),
        "CZ" => format!("1{}{} {}{}", digit(), digit(), digit(), digit()),
        "AU" => format!("2{}{}{}", digit(), digit(), digit()),
        "JP" => format!(
            "1{}{}-{}{}{}{}",
            digit(),
            digit(),
            digit(),
            digit(),
            digit(),
            digit()
        ),
        _ => format!("{:05}", rng.random_range(1_000..99_999u32)),
    }
}
