// The sandbox suite's static musl Rust program (functional_static_musl_rust):
// reads /app, writes and rereads /data, binds $PORT, starts a thread.
fn main() {
    let app = std::fs::read_to_string("/app/app-file.txt").expect("read /app");
    std::fs::write("/data/musl.txt", "rust was here").expect("write /data");
    let back = std::fs::read_to_string("/data/musl.txt").expect("reread /data");
    let port: u16 = std::env::var("PORT").unwrap().parse().unwrap();
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind $PORT");
    drop(l);
    let t = std::thread::spawn(|| 40 + 2).join().unwrap();
    println!("musl ok: {} {} {}", app.trim(), back, t);
}
