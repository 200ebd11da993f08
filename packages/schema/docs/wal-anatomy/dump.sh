#!/bin/bash
# dump.sh DB SCRIPT N
P="-h /tmp/pgx -p 55432 -U postgres"; db=$1; script=$2; n=$3
psql -q $P -d $db -c "truncate job cascade" 2>/dev/null; [ "$db" != cur ] && psql -q $P -d $db -c "truncate step_result, job_result"; [ "$db" != cur ] && psql -q $P -d $db -c "truncate step_queue"
psql -q $P -d $db -v n=$n -f seed.sql >/dev/null; [ "$db" != cur ] && psql -q $P -d $db -f seedq.sql >/dev/null
psql -q $P -d $db -c "vacuum analyze" -c checkpoint
l0=$(psql -tA $P -d $db -c "select pg_current_wal_lsn()")
/usr/lib/postgresql/15/bin/pgbench $P -n -c 1 -t $n -f $script $db 2>&1 | grep -E "tps|error"
l1=$(psql -tA $P -d $db -c "select pg_current_wal_lsn()")
/usr/lib/postgresql/15/bin/pg_waldump -p /tmp/pgx/data/pg_wal -s $l0 -e $l1 --stats=record 2>/dev/null | python3 -c '
import sys,re
n=int(sys.argv[1])
for line in sys.stdin:
    m=re.match(r"^(\S+)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)\s+\(\s*[\d.]+\)\s+(\d+)",line)
    if m and m.group(1)!="Type":
        name,N,rec,fpi,comb=m.group(1),*map(int,m.groups()[1:])
        if comb/n>=5: print(f"{name:22s} {N/n:5.2f} rec/job {comb/n:6.0f} B/job (fpi {fpi/n:5.0f})")
' $n
