"""Every endpoint of /openapi.json with junk parameters, bad keys, refused SQL, wrong methods and every format: problem+json with all fields, X-Request-Id and RateLimit headers, every status documented.

Usage (through run.sh, which starts the gateway): requests.py SEED COUNT. A finding is a 5xx
(but 503/504), a 4xx that is not problem+json, or what the script checks besides."""
import json, random, re, sys, urllib.parse, http.client
random.seed(int(sys.argv[1]) if len(sys.argv)>1 else 1)
from common import H, P, ADMIN, FLIGHT, finish
c=http.client.HTTPConnection(H,P); c.request("GET","/openapi.json"); spec=json.loads(c.getresponse().read())
paths=spec["paths"]
def tmpl_match(path):
    for t,ops in paths.items():
        rx="^"+re.sub(r"\{[^}]+\}","[^/]+",t)+"$"
        if re.match(rx,path): return t,ops
    return None,None
junk=["", "0","-1","99999999999999999999","1e3","abc","%00","'", "\"", "a,b", "null", "ü中文", "x"*5000, "1 OR 1=1", "(", ")", "NaN", " ", "\\", "/", "id desc,", "limit", "select * from x"]
cols=["id","name","district","line","stop","year","date","status","amount","lat","lon","ts"]
def rnd_where():
    c=random.choice(cols); ops=["=","<>","<",">=","LIKE","IN","BETWEEN","IS NULL","IS NOT NULL"]
    o=random.choice(ops)
    v=random.choice(["1","'a'","'%x%'","NULL","1.5","-3","'2024-01-01'","true","(1,2)","1 AND 2","abs(1)","now()","'","x'00'","99999999999999999999999"])
    if o=="BETWEEN": return f"{c} BETWEEN {v} AND {v}"
    if o.startswith("IS"): return f"{c} {o}"
    if o=="IN": return f"{c} IN ({v},{v})"
    return random.choice([f"{c} {o} {v}", f"NOT ({c} {o} {v})", f"{c} {o} {v} OR {random.choice(cols)} = 1", random.choice(junk)])
ds=['environment/air_quality','govservice/licence_types','govservice/public_facilities','justice/legal_aid_cases','market/enforcement_decisions','market/market_entities','transport/bus_lines','transport/bus_stops','nope/nope','transport/nope','Bad/Name']
fmts=["json","ndjson","csv","arrow","parquet","xml","",None]
sqls=["SELECT 1","SELECT * FROM transport.bus_lines LIMIT 3","SELECT count(*) FROM justice.legal_aid_cases","select","DROP TABLE x","SELECT * FROM 'http://x'","SELECT 1; SELECT 2","EXPLAIN SELECT * FROM transport.bus_stops","SELECT * FROM read_parquet('/etc/passwd')","WITH a AS (SELECT 1 x) SELECT * FROM a","SELECT $1","SELECT * FROM nope.nope","SELECT 1/0","SELECT repeat('x', 100000000)","SELECT * FROM generate_series(1,100000000000)","SELECT '\u0000'","SELECT CAST('x' AS INT)", "SELECT * FROM transport.bus_lines ORDER BY 1 DESC LIMIT -1","SET x=1","COPY (SELECT 1) TO '/tmp/x'","SELECT * FROM information_schema.tables","SELECT arrow_typeof(1)","SELECT * FROM audit.events LIMIT 1"]
keys=[None, ADMIN, "dg_bad_"+"c"*64, "garbage", "dg_admin1_"+"c"*64, ""]
bad=[]
def check(method, path, body=None, hdrs=None, may_break=False):
    h=dict(hdrs or {})
    k=random.choice(keys)
    if k is not None: h["Authorization"]="Bearer "+k
    if random.random()<0.2: h["Accept-Encoding"]="gzip, deflate"
    if random.random()<0.2: h["Accept"]=random.choice(["text/csv","application/x-ndjson","application/vnd.apache.arrow.stream","application/xml","*/*","text/html"])
    c=http.client.HTTPConnection(H,P,timeout=60)
    try:
        c.request(method,path,body=body,headers=h); r=c.getresponse(); data=r.read()
    except http.client.IncompleteRead as e:
        # A 200 whose body broke: right when the query met the time limit its client chose.
        if not may_break: bad.append((method,path,h,"EXC "+repr(e)))
        return
    except Exception as e:
        bad.append((method,path,h,"EXC "+repr(e))); return
    st=r.status; ct=r.getheader("content-type","")
    import gzip
    if r.getheader('content-encoding')=='gzip': data=gzip.decompress(data)
    pp=path.split("?")[0]
    if st>=500 and st not in (503,504,507): bad.append((method,path,h.get("Authorization","")[:20],st,data[:300]))
    if st>=400:
        if "problem+json" not in ct: bad.append((method,path,st,"ct",ct,data[:200]))
        else:
            try:
                j=json.loads(data)
                for f in ("type","title","status","detail","request_id"):
                    if f not in j: bad.append((method,path,st,"missing",f,data[:200]))
                if j.get("status")!=st: bad.append((method,path,st,"status mismatch",j.get("status")))
            except Exception as e: bad.append((method,path,st,"badjson",data[:200]))
    if pp.startswith("/api/"):
        for hh in ("X-Request-Id","RateLimit-Policy","RateLimit"):
            if r.getheader(hh) is None: bad.append((method,path,st,"no header",hh))
    t,ops=tmpl_match(pp)
    if t is None: 
        if st!=404: bad.append((method,path,st,"undocumented path"))
    else:
        op=ops.get(method.lower())
        if op is None:
            if st not in (405,404,401,429): bad.append((method,path,st,"method not in spec"))
        elif str(st) not in op.get("responses",{}) and "default" not in op.get("responses",{}):
            bad.append((method,t,st,"status not documented", data[:150]))
def q(d): 
    return urllib.parse.urlencode({k:v for k,v in d.items() if v is not None})
for i in range(int(sys.argv[2]) if len(sys.argv)>2 else 400):
    kind=random.randrange(8); d=random.choice(ds)
    if kind==0:
        p={"limit":random.choice(junk+["5","10"]) if random.random()<.5 else None,"offset":random.choice(junk) if random.random()<.3 else None,
           "where":rnd_where() if random.random()<.6 else None,"select":random.choice(["id","name,district","*","",",","x"*100,"id,id"]) if random.random()<.4 else None,
           "order":random.choice(["id desc","name","nope","1","id asc, name desc","id sideways",""]) if random.random()<.4 else None,
           "format":random.choice(fmts),"version":random.choice(["1","2","0","-1","x",None,None])}
        check("GET",f"/api/v1/datasets/{d}/rows?"+q(p))
    elif kind==1:
        p={"where":rnd_where() if random.random()<.5 else None,"format":random.choice(fmts),"limit":random.choice([None,"1"])}
        check("GET",f"/api/v1/datasets/{d}/export?"+q(p))
    elif kind==2:
        b={"sql":random.choice(sqls)}
        if random.random()<.3: b["format"]=random.choice(fmts)
        if random.random()<.3: b["params"]=random.choice([[1],["a"],{},None,[[1]],[{"x":1}]])
        if random.random()<.3: b["timeout_ms"]=random.choice([0,-1,1,"x",10**30])
        body=json.dumps(b) if random.random()<.85 else random.choice(["{","[]","null","{\"sql\":1}", "x"*100])
        check("POST","/api/v1/query",body,{"Content-Type":random.choice(["application/json","text/plain","application/json"])},
              may_break="timeout_ms" in b)
    elif kind==3:
        check("GET","/api/v1/query?"+q({"sql":random.choice(sqls),"format":random.choice(fmts)}))
    elif kind==4:
        p={"q":random.choice(junk) if random.random()<.5 else None,"department":random.choice(["transport","nope",""]) if random.random()<.3 else None,
           "limit":random.choice(junk) if random.random()<.3 else None,"offset":random.choice(junk) if random.random()<.3 else None,
           "access_level":random.choice(["open","shared","x"]) if random.random()<.3 else None,"sort":random.choice(["most_read","x",None]),"tag":random.choice(["bus",None])}
        check("GET","/api/v1/datasets?"+q(p))
    elif kind==5:
        p={"from":random.choice(["2024-01-01","x","2024-01-01T00:00:00Z",None]),"to":random.choice(["2030-01-01",None,"-1"]),"principal":random.choice(["anonymous","x",None]),
           "limit":random.choice(junk+[None]),"offset":random.choice([None,"5","x"]),"format":random.choice(fmts),"status":random.choice([None,"200","x"]),"next":random.choice([None,"abc","0"])}
        check("GET","/api/v1/audit/events?"+q(p))
    elif kind==6:
        check("GET","/api/v1/audit/usage?"+q({"group_by":random.choice(["dataset","principal","department","day","x",None]),"from":random.choice([None,"2024-01-01","x"]),"format":random.choice(fmts)}))
    else:
        m=random.choice(["GET","POST","PATCH","DELETE","PUT"])
        path=random.choice([f"/api/v1/datasets/{d}",f"/api/v1/datasets/{d}/versions",f"/api/v1/datasets/{d}/applications","/api/v1/applications","/api/v1/grants","/api/v1/keys","/api/v1/me","/api/v1/departments","/api/v1/audit/verify","/catalog/data.json","/api/v1/applications/xyz/approve","/api/v1/grants/123","/api/v1/keys/zzz"])
        body=random.choice([None,"{}","{","[]",json.dumps({"name":"k","role":random.choice(["consumer","root"])}),json.dumps({"purpose":"x"}),"a,b\n1,2\n"])
        check(m,path,body,{"Content-Type":random.choice(["application/json","text/csv"])} if body else None)
finish(bad)
