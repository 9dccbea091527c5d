//! Check-digit codes of Chinese registries, so generated identifiers validate like real ones.

/// Characters of the unified social credit code (GB 32100-2015).
const USCC_CHARS: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Organisation code check digit (GB 11714-1997) over 8 characters.
fn org_check(body: &[u8; 8]) -> u8 {
    const W: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .iter()
        .zip(W)
        .map(|(c, w)| {
            let v = if c.is_ascii_digit() {
                (c - b'0') as u32
            } else {
                (c - b'A') as u32 + 10
            };
            v * w
        })
        .sum();
    match 11 - sum % 11 {
        10 => b'X',
        11 => b'0',
        d => b'0' + d as u8,
    }
}

/// A valid 18-character unified social credit code, unique per `serial`.
pub fn uscc(kind: u8, region: &str, serial: u64) -> String {
    const ORG_CHARS: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
    // A bijection on 0..31^8 spreads consecutive serials over the code space.
    let space = 31u64.pow(8);
    let mut n = (serial.wrapping_mul(2_654_435_761) + 12_345) % space;
    let mut body = [b'0'; 8];
    for c in body.iter_mut().rev() {
        *c = ORG_CHARS[(n % 31) as usize];
        n /= 31;
    }
    let mut code = Vec::with_capacity(18);
    // '9': registered by market regulation (工商); `kind` is '1' for enterprises, '2' for sole traders.
    code.push(b'9');
    code.push(kind);
    code.extend_from_slice(region.as_bytes());
    code.extend_from_slice(&body);
    code.push(org_check(&body));
    // Letters outside the USCC alphabet cannot occur: the body uses it, the org check is 0-9/X.
    let sum: u32 = code
        .iter()
        .zip(USCC_WEIGHTS)
        .map(|(c, w)| USCC_CHARS.iter().position(|x| x == c).unwrap_or(0) as u32 * w)
        .sum();
    let check = (31 - sum % 31) % 31;
    code.push(USCC_CHARS[check as usize]);
    String::from_utf8(code).unwrap_or_default()
}

/// A valid 18-digit resident identity number (GB 11643-1999).
pub fn id_number(region: &str, birth: chrono::NaiveDate, seq: u16) -> String {
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8] = b"10X98765432";
    let body = format!("{region}{}{:03}", birth.format("%Y%m%d"), seq % 1000);
    let sum: u32 = body
        .bytes()
        .zip(W)
        .map(|(c, w)| (c - b'0') as u32 * w)
        .sum();
    let mut s = body;
    s.push(CHECK[(sum % 11) as usize] as char);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_credit_code_check_digit() {
        // Published example code 91350100M000100Y43 (GB 32100 sample).
        let code = b"91350100M000100Y4";
        let sum: u32 = code
            .iter()
            .zip(USCC_WEIGHTS)
            .map(|(c, w)| USCC_CHARS.iter().position(|x| x == c).unwrap() as u32 * w)
            .sum();
        assert_eq!(USCC_CHARS[((31 - sum % 31) % 31) as usize], b'3');
        let c = uscc(b'1', "330106", 42);
        assert_eq!(c.len(), 18);
        assert_ne!(uscc(b'1', "330106", 1), uscc(b'1', "330106", 2));
    }

    #[test]
    fn known_id_check_digit() {
        // The standard's example: 11010519491231002X.
        let d = chrono::NaiveDate::from_ymd_opt(1949, 12, 31).unwrap();
        assert_eq!(id_number("110105", d, 2), "11010519491231002X");
    }
}
