#!/usr/bin/env python3
"""The longest functions under src/ (tests excluded), by line count from
`fn` to its closing brace: `python3 scripts/fn_lengths.py [N]`.
A reading aid for issue 14's "no function needs more than a screen"."""
import re,sys,glob
res=[]
for f in glob.glob('src/**/*.rs',recursive=True):
    lines=open(f).read().split('\n')
    i=0
    in_test=False
    while i<len(lines):
        l=lines[i]
        if re.match(r'\s*#\[cfg\(test\)\]',l): break
        m=re.match(r'^(\s*)(pub(\([^)]*\))? )?(async )?(const )?(unsafe )?fn (\w+)',l)
        if m:
            ind=len(m.group(1)); name=m.group(7)
            j=i
            while j<len(lines) and not lines[j].rstrip().endswith('{') and not lines[j].rstrip().endswith(';'): j+=1
            if j<len(lines) and lines[j].rstrip().endswith(';'): i=j+1; continue
            k=j+1
            while k<len(lines) and not (lines[k].startswith(' '*ind+'}') and len(lines[k].rstrip())==ind+1): k+=1
            res.append((k-i+1,f+'::'+name))
            i=i+1; continue
        i+=1
res.sort(reverse=True)
n=int(sys.argv[1]) if len(sys.argv)>1 else 20
for r in res[:n]: print(r[0],r[1])
print('over 80:',sum(1 for r in res if r[0]>80))
