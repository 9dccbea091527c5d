//! The dataset shapes of the sample catalog and how their rows are made.

use super::Gen;
use super::codes::{id_number, uscc};
use super::words::*;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int32Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::TimeUnit;
use datagate_core::ColumnType;
use std::fmt::Write;
use std::sync::Arc;

/// A dataset shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[clap(rename_all = "snake_case")]
pub enum Kind {
    MarketEntities,
    AirQuality,
    BusStops,
    BusLines,
    LegalAidCases,
    MediationCases,
    EnforcementDecisions,
    LicenceTypes,
    PublicFacilities,
}

use ColumnType as T;

/// 1995-01-01 and 2024-12-31 as days since the epoch.
const DAY_1995: i64 = 9131;
const DAY_2025: i64 = 20089;
/// 2024-01-01T00:00:00 in microseconds.
const TS_2024: i64 = 1_704_067_200_000_000;
const HOUR_US: i64 = 3_600_000_000;

fn d(days: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp(days * 86_400, 0)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

fn person(g: &mut Gen, out: &mut StringBuilder) {
    let s = g.pick(SURNAMES);
    let n = g.pick(GIVEN);
    let _ = write!(out, "{s}{n}");
    out.append_value("");
}

fn mobile(g: &mut Gen, out: &mut StringBuilder) {
    let prefix = *g.pick(&[
        130, 131, 135, 136, 138, 139, 150, 151, 158, 159, 177, 180, 186, 188, 199,
    ]);
    let _ = write!(out, "{prefix}");
    for _ in 0..8 {
        let _ = write!(out, "{}", g.digit());
    }
    out.append_value("");
}

fn address(g: &mut Gen, district: &str, out: &mut StringBuilder) {
    let street = g.pick(STREETS);
    let no = g.range(1, 999);
    let _ = write!(out, "{district}{street}{no}号");
    if g.chance(0.4) {
        let _ = write!(out, "{}幢{}室", g.range(1, 30), g.range(101, 2399));
    }
    out.append_value("");
}

fn dec(b: Decimal128Builder, p: u8, s: i8) -> ArrayRef {
    let mut b = b;
    Arc::new(
        b.finish()
            .with_precision_and_scale(p, s)
            .expect("constant decimal precision is valid"),
    )
}

impl Kind {
    #[cfg(test)]
    pub const ALL: &'static [Kind] = &[
        Kind::MarketEntities,
        Kind::AirQuality,
        Kind::BusStops,
        Kind::BusLines,
        Kind::LegalAidCases,
        Kind::MediationCases,
        Kind::EnforcementDecisions,
        Kind::LicenceTypes,
        Kind::PublicFacilities,
    ];

    /// Column names and types, in order; the first column is the row's key.
    pub fn columns(self) -> Vec<(&'static str, ColumnType)> {
        match self {
            Kind::MarketEntities => vec![
                ("uscc", T::Utf8),
                ("entity_name", T::Utf8),
                ("entity_type", T::Utf8),
                ("legal_representative", T::Utf8),
                ("registered_capital", T::Decimal128(18, 2)),
                ("district", T::Utf8),
                ("industry", T::Utf8),
                ("address", T::Utf8),
                ("established_date", T::Date32),
                ("approval_date", T::Date32),
                ("status", T::Utf8),
                ("registration_authority", T::Utf8),
                ("contact_phone", T::Utf8),
            ],
            Kind::AirQuality => vec![
                ("reading_id", T::Int64),
                ("station_id", T::Utf8),
                ("station_name", T::Utf8),
                ("district", T::Utf8),
                ("measured_at", T::Timestamp(TimeUnit::Microsecond)),
                ("aqi", T::Int32),
                ("pm25", T::Float64),
                ("pm10", T::Float64),
                ("so2", T::Float64),
                ("no2", T::Float64),
                ("co", T::Float64),
                ("o3", T::Float64),
                ("primary_pollutant", T::Utf8),
                ("quality_level", T::Utf8),
            ],
            Kind::BusStops => vec![
                ("stop_id", T::Utf8),
                ("stop_name", T::Utf8),
                ("district", T::Utf8),
                ("longitude", T::Float64),
                ("latitude", T::Float64),
                ("line_count", T::Int32),
                ("has_shelter", T::Boolean),
                ("accessible", T::Boolean),
            ],
            Kind::BusLines => vec![
                ("line_id", T::Utf8),
                ("line_name", T::Utf8),
                ("start_stop", T::Utf8),
                ("end_stop", T::Utf8),
                ("stop_count", T::Int32),
                ("length_km", T::Float64),
                ("first_bus", T::Utf8),
                ("last_bus", T::Utf8),
                ("fare", T::Decimal128(5, 2)),
                ("operator", T::Utf8),
                ("night_line", T::Boolean),
            ],
            Kind::LegalAidCases => vec![
                ("case_no", T::Utf8),
                ("applicant_name", T::Utf8),
                ("applicant_id_number", T::Utf8),
                ("applicant_phone", T::Utf8),
                ("case_type", T::Utf8),
                ("cause", T::Utf8),
                ("district", T::Utf8),
                ("aid_agency", T::Utf8),
                ("lawyer_name", T::Utf8),
                ("accepted_date", T::Date32),
                ("closed_date", T::Date32),
                ("status", T::Utf8),
            ],
            Kind::MediationCases => vec![
                ("case_no", T::Utf8),
                ("dispute_type", T::Utf8),
                ("party_a_name", T::Utf8),
                ("party_b_name", T::Utf8),
                ("party_a_phone", T::Utf8),
                ("committee", T::Utf8),
                ("mediator", T::Utf8),
                ("district", T::Utf8),
                ("received_date", T::Date32),
                ("concluded_date", T::Date32),
                ("outcome", T::Utf8),
                ("agreement_amount", T::Decimal128(12, 2)),
            ],
            Kind::EnforcementDecisions => vec![
                ("decision_no", T::Utf8),
                ("party_name", T::Utf8),
                ("party_uscc", T::Utf8),
                ("legal_representative", T::Utf8),
                ("violation", T::Utf8),
                ("legal_basis", T::Utf8),
                ("penalty_type", T::Utf8),
                ("fine_amount", T::Decimal128(14, 2)),
                ("decision_date", T::Date32),
                ("authority", T::Utf8),
                ("district", T::Utf8),
            ],
            Kind::LicenceTypes => vec![
                ("type_code", T::Utf8),
                ("licence_name", T::Utf8),
                ("issuing_authority", T::Utf8),
                ("holder_type", T::Utf8),
                ("validity_years", T::Int32),
                ("electronic_since", T::Date32),
                ("mutual_recognition", T::Boolean),
            ],
            Kind::PublicFacilities => vec![
                ("facility_id", T::Utf8),
                ("name", T::Utf8),
                ("category", T::Utf8),
                ("district", T::Utf8),
                ("address", T::Utf8),
                ("longitude", T::Float64),
                ("latitude", T::Float64),
                ("opening_hours", T::Utf8),
                ("phone", T::Utf8),
                ("capacity", T::Int32),
                ("accessible", T::Boolean),
            ],
        }
    }

    /// The columns of rows `first .. first + n`.
    pub fn fill(self, g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
        match self {
            Kind::MarketEntities => market_entities(g, first, n),
            Kind::AirQuality => air_quality(g, first, n),
            Kind::BusStops => bus_stops(g, first, n),
            Kind::BusLines => bus_lines(g, first, n),
            Kind::LegalAidCases => legal_aid(g, first, n),
            Kind::MediationCases => mediation(g, first, n),
            Kind::EnforcementDecisions => enforcement(g, first, n),
            Kind::LicenceTypes => licence_types(g, first, n),
            Kind::PublicFacilities => facilities(g, first, n),
        }
    }
}

fn strings(n: usize) -> StringBuilder {
    StringBuilder::with_capacity(n, n * 16)
}

fn market_entities(g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
    let (
        mut code,
        mut name,
        mut ty,
        mut rep,
        mut district,
        mut industry,
        mut addr,
        mut status,
        mut authority,
        mut phone,
    ) = (
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
    );
    let mut capital = Decimal128Builder::with_capacity(n);
    let (mut est, mut appr) = (
        Date32Builder::with_capacity(n),
        Date32Builder::with_capacity(n),
    );
    for i in 0..n {
        let row = first + i as u64;
        let (dname, region) = *g.pick(DISTRICTS);
        let (tname, suffix) = *g.pick(ENTITY_TYPES);
        let individual = tname == "个体工商户";
        code.append_value(uscc(if individual { b'2' } else { b'1' }, region, row));
        let biz = g.pick(BUSINESS_WORDS);
        let _ = write!(
            name,
            "{}{}{}{}",
            &dname[..dname.len() - 3],
            g.pick(NAME_WORDS),
            biz,
            suffix
        );
        name.append_value("");
        ty.append_value(tname);
        person(g, &mut rep);
        let wan = if individual {
            g.range(1, 50)
        } else {
            g.range(10, 50_000)
        };
        capital.append_value(wan as i128 * 1_000_000 + g.range(0, 100) as i128 * 100);
        district.append_value(dname);
        industry.append_value(g.pick(INDUSTRIES));
        address(g, dname, &mut addr);
        let e = g.range(DAY_1995, DAY_2025);
        est.append_value(e as i32);
        appr.append_value(g.range(e, (e + 2000).min(DAY_2025 + 1)) as i32);
        status.append_value(g.pick(ENTITY_STATUS));
        let _ = write!(authority, "{dname}市场监督管理局");
        authority.append_value("");
        if g.chance(0.9) {
            mobile(g, &mut phone);
        } else {
            phone.append_null();
        }
    }
    vec![
        Arc::new(code.finish()),
        Arc::new(name.finish()),
        Arc::new(ty.finish()),
        Arc::new(rep.finish()),
        dec(capital, 18, 2),
        Arc::new(district.finish()),
        Arc::new(industry.finish()),
        Arc::new(addr.finish()),
        Arc::new(est.finish()),
        Arc::new(appr.finish()),
        Arc::new(status.finish()),
        Arc::new(authority.finish()),
        Arc::new(phone.finish()),
    ]
}

const STATIONS: u64 = 24;

fn air_quality(g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
    let mut id = arrow::array::Int64Builder::with_capacity(n);
    let (mut sid, mut sname, mut district, mut primary, mut level) =
        (strings(n), strings(n), strings(n), strings(n), strings(n));
    let mut at = TimestampMicrosecondBuilder::with_capacity(n);
    let mut aqi = Int32Builder::with_capacity(n);
    let mut f: Vec<Float64Builder> = (0..6).map(|_| Float64Builder::with_capacity(n)).collect();
    for i in 0..n {
        let row = first + i as u64;
        let station = row % STATIONS;
        let hour = (row / STATIONS) as i64;
        id.append_value(row as i64 + 1);
        let _ = write!(sid, "AQ{:04}", station + 1);
        sid.append_value("");
        let (dname, _) = DISTRICTS[(station % DISTRICTS.len() as u64) as usize];
        let _ = write!(
            sname,
            "{}{}监测站",
            &dname[..dname.len() - 3],
            STREETS[(station as usize) % STREETS.len()]
                .trim_end_matches('路')
                .trim_end_matches('街')
        );
        sname.append_value("");
        district.append_value(dname);
        at.append_value(TS_2024 + hour * HOUR_US);
        // A daily cycle plus noise keeps readings plausible.
        let base = 35.0
            + 25.0
                * ((hour % 24) as f64 / 24.0 * std::f64::consts::TAU)
                    .sin()
                    .abs();
        let pm25 = (base + g.float(-20.0, 60.0)).max(3.0);
        let pm10 = pm25 * g.float(1.2, 1.9);
        let a = (pm25 * 1.35).round() as i32;
        aqi.append_value(a);
        for (b, v) in f.iter_mut().zip([
            pm25,
            pm10,
            g.float(2.0, 18.0),
            g.float(8.0, 70.0),
            g.float(0.3, 1.6),
            g.float(20.0, 180.0),
        ]) {
            b.append_value((v * 10.0).round() / 10.0);
        }
        if a <= 50 {
            primary.append_null();
        } else {
            primary.append_value(if g.chance(0.6) {
                "PM2.5"
            } else {
                g.pick(POLLUTANTS)
            });
        }
        level.append_value(match a {
            0..=50 => "优",
            51..=100 => "良",
            101..=150 => "轻度污染",
            151..=200 => "中度污染",
            201..=300 => "重度污染",
            _ => "严重污染",
        });
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(sid.finish()),
        Arc::new(sname.finish()),
        Arc::new(district.finish()),
        Arc::new(at.finish()),
        Arc::new(aqi.finish()),
    ];
    cols.extend(f.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    cols.push(Arc::new(primary.finish()));
    cols.push(Arc::new(level.finish()));
    cols
}

fn bus_stops(g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
    let (mut id, mut name, mut district) = (strings(n), strings(n), strings(n));
    let (mut lon, mut lat) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    let mut lines = Int32Builder::with_capacity(n);
    let (mut shelter, mut accessible) = (
        BooleanBuilder::with_capacity(n),
        BooleanBuilder::with_capacity(n),
    );
    for i in 0..n {
        let row = first + i as u64;
        let _ = write!(id, "BS{:06}", row + 1);
        id.append_value("");
        let (dname, _) = *g.pick(DISTRICTS);
        let a = g.pick(STREETS);
        let b = g.pick(STREETS);
        if a == b {
            let _ = write!(name, "{a}{}号站", row % 97 + 1);
        } else {
            let _ = write!(name, "{}{}口", a, b);
        }
        name.append_value("");
        district.append_value(dname);
        lon.append_value(((120.05 + g.float(0.0, 0.35)) * 1e6).round() / 1e6);
        lat.append_value(((30.15 + g.float(0.0, 0.25)) * 1e6).round() / 1e6);
        lines.append_value(g.range(1, 12) as i32);
        shelter.append_value(g.chance(0.7));
        accessible.append_value(g.chance(0.55));
    }
    vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(district.finish()),
        Arc::new(lon.finish()),
        Arc::new(lat.finish()),
        Arc::new(lines.finish()),
        Arc::new(shelter.finish()),
        Arc::new(accessible.finish()),
    ]
}

fn bus_lines(g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
    let (mut id, mut name, mut start, mut end, mut fb, mut lb, mut op) = (
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
    );
    let mut stops = Int32Builder::with_capacity(n);
    let mut km = Float64Builder::with_capacity(n);
    let mut fare = Decimal128Builder::with_capacity(n);
    let mut night = BooleanBuilder::with_capacity(n);
    for i in 0..n {
        let row = first + i as u64;
        let _ = write!(id, "BL{:05}", row + 1);
        id.append_value("");
        let is_night = row % 25 == 24;
        if is_night {
            let _ = write!(name, "夜{}路", row / 25 + 1);
        } else {
            let _ = write!(name, "{}路", row + 1);
        }
        name.append_value("");
        let _ = write!(start, "{}公交站", g.pick(STREETS));
        start.append_value("");
        let _ = write!(end, "{}首末站", g.pick(STREETS));
        end.append_value("");
        let s = g.range(8, 45);
        stops.append_value(s as i32);
        km.append_value((s as f64 * g.float(0.45, 0.9) * 10.0).round() / 10.0);
        if is_night {
            let _ = write!(fb, "21:{:02}", g.range(0, 6) * 10);
            let _ = write!(lb, "0{}:{:02}", g.range(0, 3), g.range(0, 6) * 10);
        } else {
            let _ = write!(fb, "0{}:{:02}", g.range(5, 7), g.range(0, 6) * 10);
            let _ = write!(lb, "2{}:{:02}", g.range(0, 3), g.range(0, 6) * 10);
        }
        fb.append_value("");
        lb.append_value("");
        fare.append_value(*g.pick(&[100i128, 200, 200, 300, 500]));
        op.append_value(g.pick(LINE_OPERATORS));
        night.append_value(is_night);
    }
    vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(stops.finish()),
        Arc::new(km.finish()),
        Arc::new(fb.finish()),
        Arc::new(lb.finish()),
        dec(fare, 5, 2),
        Arc::new(op.finish()),
        Arc::new(night.finish()),
    ]
}

fn legal_aid(g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
    let (
        mut no,
        mut name,
        mut idn,
        mut phone,
        mut ty,
        mut cause,
        mut district,
        mut agency,
        mut lawyer,
        mut status,
    ) = (
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
    );
    let (mut acc, mut closed) = (
        Date32Builder::with_capacity(n),
        Date32Builder::with_capacity(n),
    );
    for i in 0..n {
        let row = first + i as u64;
        let accepted = g.range(19_358, DAY_2025); // 2023-01-01 ..
        let year = d(accepted).format("%Y");
        let _ = write!(no, "({year})法援字第{:06}号", row + 1);
        no.append_value("");
        person(g, &mut name);
        let (dname, region) = *g.pick(DISTRICTS);
        let birth = d(g.range(-7305, 12_784)); // 1950 .. 2005
        idn.append_value(id_number(region, birth, g.range(0, 999) as u16));
        mobile(g, &mut phone);
        let (t, c) = *g.pick(AID_CAUSES);
        ty.append_value(t);
        cause.append_value(c);
        district.append_value(dname);
        let _ = write!(agency, "{dname}法律援助中心");
        agency.append_value("");
        person(g, &mut lawyer);
        acc.append_value(accepted as i32);
        if g.chance(0.75) {
            closed.append_value(g.range(accepted + 10, accepted + 240) as i32);
            status.append_value("已结案");
        } else {
            closed.append_null();
            status.append_value(if g.chance(0.5) {
                "承办中"
            } else {
                "已指派"
            });
        }
    }
    vec![
        Arc::new(no.finish()),
        Arc::new(name.finish()),
        Arc::new(idn.finish()),
        Arc::new(phone.finish()),
        Arc::new(ty.finish()),
        Arc::new(cause.finish()),
        Arc::new(district.finish()),
        Arc::new(agency.finish()),
        Arc::new(lawyer.finish()),
        Arc::new(acc.finish()),
        Arc::new(closed.finish()),
        Arc::new(status.finish()),
    ]
}

fn mediation(g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
    let (
        mut no,
        mut ty,
        mut a,
        mut b,
        mut phone,
        mut committee,
        mut mediator,
        mut district,
        mut outcome,
    ) = (
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
    );
    let (mut recv, mut concl) = (
        Date32Builder::with_capacity(n),
        Date32Builder::with_capacity(n),
    );
    let mut amount = Decimal128Builder::with_capacity(n);
    for i in 0..n {
        let row = first + i as u64;
        let received = g.range(19_358, DAY_2025);
        let _ = write!(no, "TJ{}{:07}", d(received).format("%Y"), row + 1);
        no.append_value("");
        ty.append_value(g.pick(DISPUTE_TYPES));
        person(g, &mut a);
        person(g, &mut b);
        mobile(g, &mut phone);
        let (dname, _) = *g.pick(DISTRICTS);
        let _ = write!(
            committee,
            "{dname}{}社区人民调解委员会",
            g.pick(STREETS)
                .trim_end_matches('路')
                .trim_end_matches('街')
        );
        committee.append_value("");
        person(g, &mut mediator);
        district.append_value(dname);
        recv.append_value(received as i32);
        concl.append_value(g.range(received, received + 60) as i32);
        let success = g.chance(0.82);
        outcome.append_value(if success {
            "调解成功"
        } else if g.chance(0.7) {
            "调解不成功"
        } else {
            "终止调解"
        });
        if success && g.chance(0.6) {
            amount.append_value(g.range(500, 300_000) as i128 * 100);
        } else {
            amount.append_null();
        }
    }
    vec![
        Arc::new(no.finish()),
        Arc::new(ty.finish()),
        Arc::new(a.finish()),
        Arc::new(b.finish()),
        Arc::new(phone.finish()),
        Arc::new(committee.finish()),
        Arc::new(mediator.finish()),
        Arc::new(district.finish()),
        Arc::new(recv.finish()),
        Arc::new(concl.finish()),
        Arc::new(outcome.finish()),
        dec(amount, 12, 2),
    ]
}

fn enforcement(g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
    let (
        mut no,
        mut party,
        mut code,
        mut rep,
        mut violation,
        mut basis,
        mut penalty,
        mut authority,
        mut district,
    ) = (
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
    );
    let mut fine = Decimal128Builder::with_capacity(n);
    let mut date = Date32Builder::with_capacity(n);
    for i in 0..n {
        let row = first + i as u64;
        let day = g.range(19_358, DAY_2025);
        let (dname, region) = *g.pick(DISTRICTS);
        let short = &dname[..dname.len() - 3];
        let _ = write!(
            no,
            "{short}市监处罚〔{}〕{}号",
            d(day).format("%Y"),
            row + 1
        );
        no.append_value("");
        let _ = write!(
            party,
            "{short}{}{}有限公司",
            g.pick(NAME_WORDS),
            g.pick(BUSINESS_WORDS)
        );
        party.append_value("");
        code.append_value(uscc(b'1', region, 1_000_000_000 + row));
        person(g, &mut rep);
        let (v, l) = *g.pick(VIOLATIONS);
        violation.append_value(v);
        basis.append_value(l);
        let p = g.pick(PENALTIES);
        penalty.append_value(p);
        if p.contains("罚款") {
            fine.append_value(g.range(5, 2000) as i128 * 100_000);
        } else {
            fine.append_null();
        }
        date.append_value(day as i32);
        let _ = write!(authority, "{dname}市场监督管理局");
        authority.append_value("");
        district.append_value(dname);
    }
    vec![
        Arc::new(no.finish()),
        Arc::new(party.finish()),
        Arc::new(code.finish()),
        Arc::new(rep.finish()),
        Arc::new(violation.finish()),
        Arc::new(basis.finish()),
        Arc::new(penalty.finish()),
        dec(fine, 14, 2),
        Arc::new(date.finish()),
        Arc::new(authority.finish()),
        Arc::new(district.finish()),
    ]
}

fn licence_types(g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
    let (mut code, mut name, mut authority, mut holder) =
        (strings(n), strings(n), strings(n), strings(n));
    let mut years = Int32Builder::with_capacity(n);
    let mut since = Date32Builder::with_capacity(n);
    let mut mutual = BooleanBuilder::with_capacity(n);
    const VARIANTS: &[&str] = &[
        "",
        "（正本）",
        "（副本）",
        "（变更）",
        "（延续）",
        "（补发）",
        "（注销证明）",
        "（临时）",
    ];
    for i in 0..n {
        let row = first + i as u64;
        let (base, auth, h) = LICENCE_BASES[(row % LICENCE_BASES.len() as u64) as usize];
        let variant =
            VARIANTS[((row / LICENCE_BASES.len() as u64) % VARIANTS.len() as u64) as usize];
        let _ = write!(code, "11330100MB{:08}", row + 1);
        code.append_value("");
        let round = row / (LICENCE_BASES.len() * VARIANTS.len()) as u64;
        if round == 0 {
            let _ = write!(name, "{base}{variant}");
        } else {
            let _ = write!(name, "{base}{variant}第{}类", round + 1);
        }
        name.append_value("");
        authority.append_value(auth);
        holder.append_value(h);
        if h == "自然人" && g.chance(0.3) {
            years.append_null();
        } else {
            years.append_value(*g.pick(&[1, 3, 5, 5, 6, 10, 20]));
        }
        since.append_value(g.range(17_532, DAY_2025) as i32); // 2018 ..
        mutual.append_value(g.chance(0.6));
    }
    vec![
        Arc::new(code.finish()),
        Arc::new(name.finish()),
        Arc::new(authority.finish()),
        Arc::new(holder.finish()),
        Arc::new(years.finish()),
        Arc::new(since.finish()),
        Arc::new(mutual.finish()),
    ]
}

fn facilities(g: &mut Gen, first: u64, n: usize) -> Vec<ArrayRef> {
    let (mut id, mut name, mut category, mut district, mut addr, mut hours, mut phone) = (
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
        strings(n),
    );
    let (mut lon, mut lat) = (
        Float64Builder::with_capacity(n),
        Float64Builder::with_capacity(n),
    );
    let mut capacity = Int32Builder::with_capacity(n);
    let mut accessible = BooleanBuilder::with_capacity(n);
    for i in 0..n {
        let row = first + i as u64;
        let _ = write!(id, "PF{:06}", row + 1);
        id.append_value("");
        let (cat, names) = *g.pick(FACILITY_CATEGORIES);
        let (dname, _) = *g.pick(DISTRICTS);
        let street = g.pick(STREETS);
        let _ = write!(
            name,
            "{}{}{}",
            &dname[..dname.len() - 3],
            street.trim_end_matches('路').trim_end_matches('街'),
            g.pick(names)
        );
        name.append_value("");
        category.append_value(cat);
        district.append_value(dname);
        address(g, dname, &mut addr);
        lon.append_value(((120.05 + g.float(0.0, 0.35)) * 1e6).round() / 1e6);
        lat.append_value(((30.15 + g.float(0.0, 0.25)) * 1e6).round() / 1e6);
        hours.append_value(match cat {
            "公园" | "公共厕所" => "全天开放",
            "医疗机构" => "08:00-17:30（急诊24小时）",
            "图书馆" => "09:00-21:00（周一闭馆）",
            _ => "08:30-17:00",
        });
        if cat == "公共厕所" {
            phone.append_null();
        } else {
            let _ = write!(phone, "0571-8{:07}", g.range(0, 9_999_999));
            phone.append_value("");
        }
        if matches!(cat, "公园" | "公共厕所") {
            capacity.append_null();
        } else {
            capacity.append_value(g.range(20, 5000) as i32);
        }
        accessible.append_value(g.chance(0.8));
    }
    vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(category.finish()),
        Arc::new(district.finish()),
        Arc::new(addr.finish()),
        Arc::new(lon.finish()),
        Arc::new(lat.finish()),
        Arc::new(hours.finish()),
        Arc::new(phone.finish()),
        Arc::new(capacity.finish()),
        Arc::new(accessible.finish()),
    ]
}
