//! How the gateway's messages count things: "1 row", "2 rows".

/// `n` and `noun`, with an `s` unless `n` is 1: "1 request", "60 requests", "0 files".
pub fn plural(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn one_is_singular() {
        assert_eq!(plural(1u32, "request"), "1 request");
        assert_eq!(plural(0u32, "request"), "0 requests");
        assert_eq!(plural(60u64, "row"), "60 rows");
    }
}
