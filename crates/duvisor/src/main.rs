fn main() {
    eprintln!("duvisor: under construction");
    std::process::exit(2);
}
