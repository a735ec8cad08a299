#!/usr/bin/env python3
"""Which top-level module of src/ uses which (`crate::x` paths, tests
excluded), and any cycle: `python3 scripts/module_deps.py`."""
import re,glob,os,collections
mods={}
for f in glob.glob('src/**/*.rs',recursive=True):
    rel=f[4:]
    top=rel.split('/')[0].replace('.rs','')
    if top in ('main','lib'): continue
    txt=open(f).read()
    txt=txt.split('#[cfg(test)]')[0]
    for m in re.findall(r'crate::(\w+)',txt):
        if m!=top: mods.setdefault(top,set()).add(m)
for k in sorted(mods): print(k,'->',' '.join(sorted(mods[k])))
# cycle check
import sys
g={k:v for k,v in mods.items()}
state={}
def dfs(n,path):
    state[n]=1
    for m in g.get(n,()):
        if state.get(m)==1: print('CYCLE',path+[m]); 
        elif m not in state: dfs(m,path+[m])
    state[n]=2
for n in g:
    if n not in state: dfs(n,[n])
