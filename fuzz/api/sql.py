"""Random SQL expressions (functions, windows, casts, CASE, IN) over the sample's tables.

Usage (through run.sh, which starts the gateway): sql.py SEED COUNT. A finding is a 5xx
(but 503/504), a 4xx that is not problem+json, or what the script checks besides."""
import json, random, sys, http.client
random.seed(int(sys.argv[1])); N=int(sys.argv[2])
from common import ADMIN, finish, request
def post(body):
    return request("POST","/api/v1/query",json.dumps(body),key=None)
T={"transport.bus_lines":["line_id","stop_count","fare","night_line","operator"],"transport.bus_stops":["stop_id","has_shelter","latitude","longitude"],"market.market_entities":["uscc","entity_type","address","registered_capital","registered_on"]}
funcs=["abs","upper","lower","length","substr","round","coalesce","nullif","concat","date_part","date_trunc","to_date","to_timestamp","cast","sum","avg","min","max","count","array_agg","string_agg","median","approx_percentile_cont","row_number","rank","lag","lead","first_value","regexp_replace","regexp_like","split_part","starts_with","md5","sha256","unnest","make_array","array_length","struct","named_struct","greatest","least","trim","btrim","lpad","repeat","to_char","now","random","arrow_typeof","digest","encode","decode","levenshtein","strpos","translate","chr","ascii","power","ln","log","sqrt","exp","pi","floor","ceil","trunc","isnan","iszero","gcd","lcm","factorial","nanvl","atan2","to_hex","date_bin","from_unixtime","make_date","to_unixtime","bit_and","bool_and","var_samp","stddev","corr","covar_samp","regr_slope","grouping","percentile_cont","nth_value","ntile","cume_dist"]
lits=["1","0","-1","1.5","'a'","'2024-01-01'","NULL","true","DATE '2024-01-01'","INTERVAL '1 day'","[1,2]","{'a':1}","'%'","9223372036854775807","1e308","x'ff'"]
def expr(cols,d=0):
    k=random.randrange(6 if d<2 else 2)
    if k==0: return random.choice(cols)
    if k==1: return random.choice(lits)
    if k==2:
        f=random.choice(funcs); n=random.randint(0,3)
        if f=="cast": return f"CAST({expr(cols,d+1)} AS {random.choice(['INT','BIGINT','DOUBLE','VARCHAR','DATE','TIMESTAMP','BOOLEAN','DECIMAL(5,2)','TINYINT'])})"
        a=", ".join(expr(cols,d+1) for _ in range(n))
        s=f"{f}({a})"
        if f in ("row_number","rank","lag","lead","first_value","nth_value","ntile","cume_dist") or random.random()<.05: s+=f" OVER (PARTITION BY {random.choice(cols)} ORDER BY {random.choice(cols)})"
        return s
    if k==3: return f"({expr(cols,d+1)} {random.choice(['+','-','*','/','%','||','=','<','>','AND','OR','LIKE','IS DISTINCT FROM','<=>','->'])} {expr(cols,d+1)})"
    if k==4: return f"CASE WHEN {expr(cols,d+1)} THEN {expr(cols,d+1)} ELSE {expr(cols,d+1)} END"
    return f"{expr(cols,d+1)} IN ({expr(cols,d+1)}, {expr(cols,d+1)})"
bad=[]; stats={}
for i in range(N):
    t=random.choice(list(T)); cols=T[t]
    sel=", ".join(expr(cols) for _ in range(random.randint(1,3)))
    q=f"SELECT {sel} FROM {t}"
    if random.random()<.5: q+=f" WHERE {expr(cols)}"
    if random.random()<.3: q+=f" GROUP BY {random.choice(cols)}"
    if random.random()<.3: q+=f" ORDER BY {random.choice(['1','2',random.choice(cols)])}"
    q+=" LIMIT 5"
    st,ct,d=post({"sql":q})
    stats[st]=stats.get(st,0)+1
    if st>=500 and st not in (503,504): bad.append((q,st))
print("answers:", sorted(stats.items()))
finish(bad)
