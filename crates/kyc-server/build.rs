//! Rebuilds the binary when an adapter's migrations change: `database.rs` embeds them (through
//! `sqlx::migrate!`) to know what "migrations current" means for `/readyz`.

fn main() {
    for dir in [
        "../kyc-postgres/migrations/postgres",
        "../kyc-sqlite/migrations/sqlite",
        "../kyc-ledger/migrations/postgres",
        "../kyc-ledger/migrations/sqlite",
    ] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
