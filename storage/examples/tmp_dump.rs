use pqdag_storage::{RocksStore, Store, SyncPolicy};
use pqdag_wire::VertexId;
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap();
    let s = RocksStore::open(std::path::Path::new(&path), SyncPolicy::WalNoSync).unwrap();
    for hex in args {
        let mut b = [0u8; 32];
        for i in 0..32 { b[i] = u8::from_str_radix(&hex[2*i..2*i+2], 16).unwrap(); }
        let id = VertexId(b);
        let st = s.status(&id).unwrap();
        let v = s.get(&id).unwrap();
        println!("{} status={:?} stored={}", &hex[..10], st, v.is_some());
    }
    println!("locks={}", s.locks().unwrap().len());
}
