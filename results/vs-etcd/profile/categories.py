import re,sys,subprocess
def cats(f):
    out=subprocess.run(["perf","report","-i",f,"--no-children","--sort","comm,dso,symbol","--stdio","-g","none"],capture_output=True,text=True).stdout
    tot={}
    for line in out.splitlines():
        m=re.match(r"\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)",line)
        if not m: continue
        pct=float(m.group(1)); comm=m.group(2); dso=m.group(3); kind=m.group(4); sym=m.group(5).strip()
        if kind=='k': c='kernel (syscalls, scheduling, network, page cache)'
        elif re.search(r"malloc|_int_free|unlink_chunk|cfree|realloc|free\b|malloc_consolidate",sym): c='allocator (malloc/free)'
        elif re.search(r"\bh2::|hyper::|tonic::|tower|http::|prost|hpack|bytes::",sym): c='gRPC/HTTP/2 (h2, hyper, tonic, prost, bytes)'
        elif 'redb' in sym: c='redb'
        elif re.search(r"raft::|raft_proto|protobuf",sym): c='raft-rs and its protobuf'
        elif 'memmove' in sym or 'memcmp' in sym or 'memcpy' in sym or 'memset' in sym: c='memcpy/memcmp'
        elif 'cluster::' in sym or 'etcd_client' in sym: c='metcd (cluster crate, etcd messages)'
        else: c='other'
        tot[c]=tot.get(c,0)+pct
    return tot
for f in ["leader.data","follower.data"]:
    print(f"## {f.split('.')[0]}: share of the process's CPU samples by kind of code\n")
    print("| kind | share |\n|---|---:|")
    for c,v in sorted(cats(f).items(), key=lambda x:-x[1]):
        print(f"| {c} | {v:.1f}% |")
    print()
