# re-plot: gnuplot decode.gp (from this folder)
set terminal pngcairo size 900,560 font ',11'
set output 'decode.png'
set datafile separator ','
set key autotitle columnhead outside right
set grid
set title "decode time per token after a prefill of the context"
set xlabel "context (tokens)"
set ylabel "microseconds per token"
set logscale x 2
set logscale y 10
plot for [i=2:5] 'decode.csv' using 1:i with linespoints lw 2
